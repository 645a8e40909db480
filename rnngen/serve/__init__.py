"""The server layer: one loaded model behind HTTP (`rnngen serve`).

Requests checked and turned into jobs (`service`), many requests sampled together in one batch
(`batcher`), the Starlette routes and uvicorn (`app`) and the browser page (`web/`). It sits on the
inference side: it may import the core modules, data, models, generate and the API, never training.
"""

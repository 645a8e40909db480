"""The export layer: a trained model in a format other programs run (`rnngen export`).

`onnx` writes the model's one-token step as an ONNX graph (token ids and state in, scores and the
new state out) beside a JSON file with the vocabulary, the tokenizer's rules and the sampling
defaults, so onnxruntime (Python, C/C++, C#, Java, JavaScript in a browser, mobile) can write text
without Python or rnngen. It may import the core modules, data, models, generate and the API,
never training.
"""

"""The HTTP side of `rnngen serve`: a Starlette application over a Service and its Batcher.

    GET  /              the page (rnngen/serve/web/): type a seed, watch the text and the probabilities
    GET  /healthz       {"status": "ok", ...the batch's load}
    GET  /v1/model      what `rnngen info --json` prints, plus the limits and default options
    POST /v1/generate   JSON options -> {"samples": [...], "settings": {...}}; "stream": true -> Server-Sent Events

Every error is JSON, {"error": message}, with a 4xx or 5xx status (docs/serve.md lists them).
Requests never name files: the only files read are the page's own, from a fixed list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rnngen import console
from rnngen.errors import UserError
from rnngen.serve.batcher import Batcher, QueueFull
from rnngen.serve.service import LOOPBACK, ApiError, Service, sample_record

MAX_BODY = 256 * 1024  # bytes of a request body
PAGE_FILES = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css")}  # fmt: skip
PAGE_HEADERS = {  # the page may load nothing from anywhere else
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def create_app(service: Service) -> Starlette:
    pages = {path: (resources.files("rnngen.serve").joinpath("web", name).read_bytes(), kind)
             for path, (name, kind) in PAGE_FILES.items()}  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        limits, model = service.limits, service.model

        def deliver(events):  # from the worker thread: one hand-over per step
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_dispatch, events)

        app.state.batcher = Batcher(
            model.module, model.vocab, model.device, deliver, limits.max_batch, limits.queue_size, service.precision
        )
        app.state.batcher.start()
        try:
            yield
        finally:
            app.state.batcher.stop()

    async def page(request: Request) -> Response:
        body, kind = pages[request.url.path]
        return Response(body, media_type=kind, headers=PAGE_HEADERS)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **request.app.state.batcher.load()})

    async def model_info(request: Request) -> Response:
        return JSONResponse(service.description)

    async def generate(request: Request) -> Response:
        job, settings = service.job(_parse(await _read_body(request)))
        job.inbox = asyncio.Queue()
        try:
            request.app.state.batcher.submit(job)
        except QueueFull:
            raise ApiError(503, "the server is busy (the batch and the queue are full); try again shortly") from None
        wait = service.limits.time_limit + 10  # the worker reports the time limit; this only guards against a hang
        if job.stream:
            return StreamingResponse(_events(job, settings, wait), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
        kind, data = await _next(job, wait)
        if kind == "error":
            return JSONResponse({"error": data["error"]}, status_code=data["status"])
        return JSONResponse(_result(data, settings))

    routes = [Route(path, page) for path in pages]
    routes += [Route("/healthz", healthz), Route("/v1/model", model_info),
               Route("/v1/generate", generate, methods=["POST"])]  # fmt: skip
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)


def _dispatch(events) -> None:
    for job, kind, data in events:
        job.inbox.put_nowait((kind, data))


async def _next(job, wait: float) -> tuple[str, dict]:
    try:
        return await asyncio.wait_for(job.inbox.get(), timeout=wait)
    except asyncio.TimeoutError:
        job.cancelled = True
        return "error", {"error": "no answer from the generator in time", "status": 504}


async def _events(job, settings: dict, wait: float):
    """Server-Sent Events: `token` per generated token, `text` for held-back text, then `done` or `error`."""
    try:
        while True:
            kind, data = await _next(job, wait)
            if kind == "done":
                data = _result(data, settings)
            yield f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
            if kind in ("done", "error"):
                return
    finally:
        job.cancelled = True  # the client went away, or it is over: either way the worker can drop it


def _result(data: dict, settings: dict) -> dict:
    return {"samples": [sample_record(s) for s in data["samples"]], "settings": settings}


async def _read_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"the request body is larger than {MAX_BODY // 1024} KiB")
    return body


def _parse(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None


async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    console.warn(f"{request.method} {request.url.path} failed: {type(exc).__name__}: {exc}")
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 takes any free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host") from None


def run(service: Service, host: str, port: int, verbose: bool = False) -> None:
    """Serve until interrupted; says on stderr where it listens."""
    import uvicorn

    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown_host}:{bound_port}"
    info = service.description
    console.info(f"rnngen serve: {info['checkpoint']} ({info['level']}-level {info['cell']}) "
                 f"listening on {url}/ (API: {url}/v1/generate); Ctrl-C stops")  # fmt: skip
    if host not in LOOPBACK:
        console.warn(f"listening on {host}: anyone who can reach this machine can use the model (no authentication)")
    server_config = uvicorn.Config(create_app(service), log_level="info" if verbose else "warning",
                                   access_log=verbose, timeout_graceful_shutdown=5)  # fmt: skip
    uvicorn.Server(server_config).run(sockets=[sock])

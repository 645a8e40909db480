"""`rnngen serve`: one loaded model behind an HTTP API, with limits that keep the machine up.

This module holds what does not depend on the web stack: the limits, the checks that turn a
request body into a batching Job (the same option names, defaults and ranges as `rnngen sample`),
and the JSON answers. rnngen.serve.app holds the routes and starts uvicorn on a socket.
Starlette and uvicorn are an optional extra: `pip install 'rnngen[serve]'`.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass

from rnngen import config as config_module
from rnngen.errors import UserError
from rnngen.generate.sample import DecodeOptions, Decoding, ModelSteps, Sample, encode_seed, seed_text
from rnngen.serve.batcher import Job

INSTALL_HINT = "pip install 'rnngen[serve]'"
# Options of `rnngen sample` a request may set (its sample: keys); the others have no meaning here.
REQUEST_OPTIONS = ("seed", "length", "temperature", "top_k", "top_p", "repetition_penalty", "num_samples",
                   "random_seed", "stop", "max_time", "on_unknown", "allow_unk")  # fmt: skip
EXPLAIN_TOP = 10  # candidates reported per token with "explain": true
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_server_stack() -> None:
    """Fail early, with the install command, when the serve extra is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(
            f"rnngen serve needs starlette and uvicorn, which are not installed; install them with: {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much waiting work the server accepts."""

    max_length: int  # tokens per sample, and tokens of the seed
    max_samples: int  # num_samples per request
    max_batch: int  # samples generated together in one batch
    queue_size: int  # requests that may wait while the batch is full; more get 503
    time_limit: float  # seconds from arrival to the last token; later is 504


class ApiError(Exception):
    """A request the server refuses: the HTTP status and a message saying what to change."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Service:
    """The loaded model, its default sample settings and the limits; builds jobs from requests."""

    def __init__(self, model, limits: Limits, defaults: config_module.SampleConfig):
        if limits.max_samples > limits.max_batch:
            raise UserError(
                f"--max-samples ({limits.max_samples}) is larger than --max-batch ({limits.max_batch}); "
                "a request must fit in one batch"
            )
        self.model, self.limits = model, limits
        self.precision = defaults.precision  # one for the server: refused now if this machine cannot run it
        ModelSteps(model.module, model.device, self.precision)  # and the weights converted before any request
        self.defaults = {k: v for k, v in dataclasses.asdict(defaults).items() if k in REQUEST_OPTIONS}
        self.defaults["stop"] = list(self.defaults["stop"])
        self.description = {**model.info(), "limits": dataclasses.asdict(limits), "defaults": self.defaults,
                            "precision": self.precision}  # fmt: skip

    def job(self, body: object) -> tuple[Job, dict]:
        """A job for the batcher from a request body, and the settings it runs with; ApiError if refused."""
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object of options, not {type(body).__name__}")
        body = dict(body)
        stream, explain = _flag(body, "stream"), _flag(body, "explain")
        for key in body:
            if key in config_module.SampleConfig.__dataclass_fields__ and key not in REQUEST_OPTIONS:
                raise ApiError(422, f"option `{key}` does not apply to the API; each sample comes with its seed")
        try:
            layers = [("the server's defaults", {"sample": self.defaults}), ("the request", {"sample": body})]
            settings = config_module.build(layers).sample
        except UserError as e:
            raise ApiError(422, _for_api(str(e))) from None
        self._check_limits(settings)
        try:
            seed_ids = encode_seed(self.model.vocab, settings.seed, settings.on_unknown)
        except UserError as e:
            raise ApiError(422, _for_api(str(e))) from None
        if len(seed_ids) > self.limits.max_length:
            raise ApiError(413, f"the seed has {len(seed_ids)} tokens, more than this server's limit of "
                                f"{self.limits.max_length}; give a shorter seed")  # fmt: skip
        random_seed = settings.random_seed if settings.random_seed is not None else secrets.randbelow(2**31)
        options = dataclasses.replace(DecodeOptions.from_config(settings), random_seed=random_seed)
        shown = seed_text(self.model.vocab, seed_ids) if settings.seed else ""
        decoding = Decoding(self.model.vocab, seed_ids, options, self.model.device, shown)
        deadline = time.monotonic() + self.limits.time_limit
        job = Job(decoding, seed_ids, deadline, stream=stream, explain=EXPLAIN_TOP if explain else 0)
        used = {
            k: v for k, v in config_module.Config(sample=settings).to_dict()["sample"].items() if k in REQUEST_OPTIONS
        }
        return job, {**used, "random_seed": random_seed}

    def _check_limits(self, settings) -> None:
        limits = self.limits
        if settings.length > limits.max_length:
            raise ApiError(413, f"length {settings.length} is more than this server's limit of {limits.max_length} "
                                "tokens per sample; ask for fewer")  # fmt: skip
        if settings.num_samples > limits.max_samples:
            raise ApiError(413, f"num_samples {settings.num_samples} is more than this server's limit of "
                                f"{limits.max_samples} per request; ask for fewer")  # fmt: skip


def _for_api(message: str) -> str:
    """The command line's wording of a problem, in the API's terms: JSON option names, not keys and flags."""
    message = message.replace("unknown key `sample.", "unknown option `").replace("`sample.", "`")
    message = message.replace("sample.", "").replace(
        "--on-unknown unk|skip|nearest", '"on_unknown": "unk", "skip" or "nearest"'
    )
    return message.replace("problems in the config", "problems in the request")


def _flag(body: dict, name: str) -> bool:
    value = body.pop(name, False)
    if not isinstance(value, bool):
        raise ApiError(422, f"`{name}` must be true or false (got {value!r})")
    return value


def sample_record(sample: Sample) -> dict:
    """One sample as the API returns it: the same fields as `rnngen sample --format jsonl`."""
    return {"seed": sample.seed, "text": sample.text, "tokens": sample.tokens,
            "mean_logprob": round(sample.mean_logprob, 6), "stopped_by": sample.stopped_by}  # fmt: skip

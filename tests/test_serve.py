"""`rnngen serve` through real servers on free loopback ports, spoken to over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import run_cli, train_char_and_word


class Server:
    """`rnngen serve --port 0 ARGS` in a subprocess; its stderr is read all along so it never blocks."""

    def __init__(self, *args):
        command = [sys.executable, "-m", "rnngen", "serve", "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        found = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line)
                if "listening on" in line:
                    found.set()
            found.set()  # it has ended

        threading.Thread(target=read, daemon=True).start()
        found.wait(120)
        if not any("listening on" in line for line in self.lines):
            self.proc.kill()
            raise AssertionError("the server did not start:\n" + "".join(self.lines))
        self.url = re.search(r"listening on (http://[^/ ]+)/", "".join(self.lines)).group(1)
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def post(self, body=None, **kwargs) -> httpx.Response:
        return self.client.post("/v1/generate", json=body, **kwargs)

    def stop(self) -> int:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A char model and a word model, trained once for the module."""
    return train_char_and_word(tmp_path_factory.mktemp("serve"), hidden_size=48, max_steps=60)


@pytest.fixture(scope="module")
def server(runs):
    server = Server("--run", runs["char"], "--max-length", 300, "--max-samples", 4)
    yield server
    assert server.stop() in (0, 130)  # Ctrl-C ends it


@pytest.fixture(scope="module")
def word_server(runs):
    server = Server("--run", runs["word"])
    yield server
    server.stop()


def sse(text: str) -> list[tuple[str, dict]]:
    """Server-Sent Events as (event, data) pairs."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def cli_texts(run, options: dict) -> list[str]:
    flags = []
    for key, value in options.items():
        for item in value if isinstance(value, list) else [value]:
            flags += [f"--{key.replace('_', '-')}", str(item)]
    result = run_cli("sample", "--run", run, "--format", "jsonl", *flags)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line)["text"] for line in result.stdout.splitlines()]


# --------------------------------------------------------------------------- answers


def test_generate_returns_texts_and_token_counts(server):
    reply = server.post({"seed": "the ", "length": 40, "num_samples": 2, "temperature": 1.0})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [s["tokens"] for s in body["samples"]] == [40, 40]
    assert all(s["seed"] == "the " and s["text"] and s["stopped_by"] == "length" for s in body["samples"])
    assert isinstance(body["settings"]["random_seed"], int)  # chosen by the server, so the answer can be repeated
    again = server.post({"seed": "the ", "length": 40, "num_samples": 2, "temperature": 1.0,
                         "random_seed": body["settings"]["random_seed"]}).json()  # fmt: skip
    assert again["samples"] == body["samples"]


OPTION_SETS = [
    {"seed": "the ", "length": 60, "temperature": 1.0, "random_seed": 3},
    {"seed": "a cat", "length": 50, "temperature": 1.2, "top_k": 5, "random_seed": 7, "num_samples": 3},
    {"seed": "the dog", "length": 50, "top_p": 0.9, "repetition_penalty": 1.3, "random_seed": 11},
    {"seed": "the ", "length": 80, "temperature": 0.9, "stop": ["."], "random_seed": 5, "num_samples": 2},
    {"seed": "the bird", "length": 30, "temperature": 0, "random_seed": 1},
]


def test_same_random_seed_gives_the_text_of_rnngen_sample_alone_and_in_a_busy_batch(server, runs):
    expected = [cli_texts(runs["char"], options) for options in OPTION_SETS]
    alone = [[s["text"] for s in server.post(options).json()["samples"]] for options in OPTION_SETS]
    assert alone == expected
    with concurrent.futures.ThreadPoolExecutor(len(OPTION_SETS) * 2) as pool:  # all at once: they share batches
        replies = list(pool.map(server.post, OPTION_SETS * 2))
    together = [[s["text"] for s in r.json()["samples"]] for r in replies]
    assert together == expected * 2


def test_stream_sends_each_token_with_its_probabilities_then_the_result(server):
    options = {"seed": "the ", "length": 30, "temperature": 0.7, "top_k": 3, "random_seed": 2}
    reply = server.post({**options, "stream": True, "explain": True})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = sse(reply.text)
    kinds = [kind for kind, _ in events]
    assert kinds == ["token"] * 30 + ["done"]
    tokens = [data for kind, data in events if kind == "token"]
    done = events[-1][1]
    assert "".join(t["text"] for t in tokens) == done["samples"][0]["text"]
    assert done["samples"] == server.post(options).json()["samples"]  # streaming changes nothing
    for token in tokens:
        candidates = token["candidates"]
        raw, final = [c["raw"] for c in candidates], [c["final"] for c in candidates]
        assert raw == sorted(raw, reverse=True) and sum(raw) <= 1 + 1e-5 and sum(final) <= 1 + 1e-5
        assert sum(f > 0 for f in final) <= 3  # top-k 3: only three candidates can be drawn
        assert token["token"] in [c["token"] for c in candidates] and token["token"] == token["text"]
        chosen = next(c for c in candidates if c["token"] == token["token"])
        assert chosen["final"] > 0
    sharper = [t["candidates"][0] for t in tokens]  # temperature 0.7 makes the favourite more likely
    assert all(c["final"] >= c["raw"] for c in sharper)


def test_stream_without_explain_and_stop_text(server):
    streamed = server.post({"seed": "the ", "length": 200, "stop": ".", "stream": True, "random_seed": 4})
    events = sse(streamed.text)
    assert all("candidates" not in data for _, data in events)
    done = events[-1][1]["samples"][0]
    assert done["stopped_by"] == "stop" and "." not in done["text"]
    assert "".join(d["text"] for k, d in events if k in ("token", "text")) == done["text"]


def test_model_info_is_rnngen_info_plus_the_limits(server, runs):
    info = json.loads(run_cli("info", "--json", runs["char"]).stdout)
    described = server.client.get("/v1/model").json()
    assert {k: v for k, v in described.items() if k not in ("limits", "defaults", "precision")} == info
    assert described["precision"] == "fp32"  # of the weights, for the whole server (--precision)
    assert described["limits"] == {"max_length": 300, "max_samples": 4, "max_batch": 64, "queue_size": 64,
                                   "time_limit": 60.0}  # fmt: skip
    assert described["defaults"]["length"] == 30  # the checkpoint's sample: section
    assert server.client.get("/healthz").json()["status"] == "ok"


def test_page_is_self_contained(server):
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/", "/page.js", "/page.css"):
        text = server.client.get(path).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{path} refers to another site"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body, status, message",
    [
        ("{not json", 400, "not valid JSON"),
        ([1, 2], 400, "must be a JSON object"),
        ({"tempreature": 1}, 422, "unknown option `tempreature` in the request; did you mean `temperature`?"),
        ({"temp": 1}, 422, "did you mean `temperature`?"),
        ({"temperature": -1}, 422, "temperature: must be at least 0 (got -1, from the request)"),
        ({"top_p": 1.5}, 422, "top_p: must be at most 1"),
        ({"length": "long"}, 422, "length: must be a whole number"),
        ({"on_unknown": "guess"}, 422, "on_unknown: must be one of error, unk, skip, nearest"),
        ({"stream": "yes"}, 422, "`stream` must be true or false"),
        ({"include_seed": False}, 422, "does not apply to the API"),
        ({"checkpoint": "/etc/passwd"}, 422, "unknown option `checkpoint`"),
        ({"length": 301}, 413, "limit of 300 tokens"),
        ({"num_samples": 5}, 413, "limit of 4 per request"),
        ({"seed": "the " * 100}, 413, "the seed has 400 tokens"),
    ],
)
def test_refused_requests_say_why_in_json(server, body, status, message):
    content = body if isinstance(body, str) else json.dumps(body)
    reply = server.client.post("/v1/generate", content=content)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


def test_unknown_seed_word_gets_the_closest_known_word(word_server):
    reply = word_server.post({"seed": "the cta"})
    assert reply.status_code == 422
    assert reply.json()["error"].startswith(
        "seed token(s) not in the model's vocabulary: 'cta'; closest known: 'cta' -> 'cat'"
    )
    assert '"on_unknown": "unk", "skip" or "nearest"' in reply.json()["error"]
    fixed = word_server.post({"seed": "the cta", "on_unknown": "nearest", "length": 5})
    assert fixed.status_code == 200 and fixed.json()["samples"][0]["seed"] == "the cat"


def test_other_http_errors_are_json_too(server):
    assert server.client.get("/v1/generate").status_code == 405
    missing = server.client.get("/../etc/passwd")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    big = server.client.post("/v1/generate", content=b"{" + b" " * 300_000 + b"}")
    assert big.status_code == 413 and "larger than 256 KiB" in big.json()["error"]


def test_full_queue_is_503_and_the_time_limit_504(runs):
    server = Server("--run", runs["char"], "--max-batch", 1, "--max-samples", 1, "--queue-size", 1, "--time-limit", 1,
                    "--max-length", 1_000_000)  # fmt: skip
    try:
        long = {"seed": "the ", "length": 1_000_000}  # far more than a second's work
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(server.post, [long] * 6))
        codes = sorted(r.status_code for r in replies)
        assert 503 in codes and 504 in codes and set(codes) <= {503, 504}, codes
        for reply in replies:
            assert reply.json()["error"].startswith(
                ("the server is busy", "the request ran past the server's time limit")
            )
        streamed = server.post({**long, "stream": True})  # the stream has begun: the time limit comes as an event
        late = next(r for r in replies if r.status_code == 504).json()["error"]
        assert sse(streamed.text)[-1] == ("error", {"error": late, "status": 504})
        assert server.post({"seed": "the ", "length": 10}).status_code == 200  # and it is free again
    finally:
        server.stop()


# --------------------------------------------------------------------------- the command


def test_serve_without_the_extra_says_how_to_install(runs):
    hide = "import sys; sys.modules['uvicorn'] = None; from rnngen.cli import main; main(sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", hide, "serve", "--run", str(runs["char"])],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "Error: rnngen serve needs starlette and uvicorn, which are not installed; "
        "install them with: pip install 'rnngen[serve]'\n"
    )


def test_busy_port_and_bad_limits_are_usage_errors(server, runs):
    port = server.url.rsplit(":", 1)[1]
    taken = run_cli("serve", "--run", runs["char"], "--port", port)
    assert taken.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert "choose another --port" in taken.stderr
    too_many = run_cli("serve", "--run", runs["char"], "--max-samples", "9", "--max-batch", "8")
    assert too_many.exit_code == 2 and "--max-samples (9) is larger than --max-batch (8)" in too_many.stderr
    assert run_cli("serve", "--checkpoint", "nope.pt").exit_code == 2


def test_listens_on_loopback_and_says_where(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert any("listening on http://127.0.0.1:" in line for line in server.lines)

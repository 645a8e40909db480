"""Load on `rnngen serve`: 1, 8 and 32 concurrent clients each asking for 200-token samples.

The model is the char-level 2x512 LSTM of sample_speed.py (trained for 2 steps: the weights are
all but random, which does not change the speed). The server runs in its own process on a free
loopback port; the clients are threads here, each sending its requests one after another.
Reports per level: requests/s, p50/p99 latency, aggregate tokens/s, failures, and the server's
resident memory (RSS) sampled all along. Bounded: a fixed number of requests per client and at
most LEVEL_TIMEOUT seconds per level.
Goal (issue 17): tokens/s at 32 clients >= 5x one client (requests share one batch), no failed
request, memory flat across the run. The whole series runs twice: with torch's own number of CPU
threads in the server, and with one thread (OMP_NUM_THREADS=1), which copes better with a machine
whose cores other work also wants; then once more with int8 weights (--precision int8, issue 30).
    python bench/serve_load.py
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from common import report
from sample_speed import make_checkpoint

LEVELS = [(1, 8), (8, 4), (32, 3), (32, 3)]  # (clients, requests per client); 32 twice: does memory keep growing?
REQUEST = {"seed": "The ", "length": 200, "temperature": 0.8}
LEVEL_TIMEOUT = 180.0


def start_server(checkpoint: Path, env: dict, precision: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "rnngen", "serve", "--checkpoint", str(checkpoint), "--port", "0",
               "--max-length", "200", "--max-samples", "1", "--max-batch", "64", "--queue-size", "64",
               "--precision", precision]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    for line in server.stderr:
        found = re.search(r"listening on (http://[\d.:]+)/", line)
        if found:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining
            return server, found.group(1)
    sys.exit("rnngen serve did not start")


class MemoryWatch:
    """The server's RSS in MB, read from /proc every 0.2 s while the load runs."""

    def __init__(self, pid: int):
        self.path = Path(f"/proc/{pid}/status")
        self.samples: list[float] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def rss(self) -> float:
        text = self.path.read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024

    def _watch(self):
        while not self.stopped.wait(0.2):
            self.samples.append(self.rss())


def client(url: str, count: int, deadline: float) -> list[tuple[float, int, bool]]:
    """(latency s, tokens, ok) for each of `count` requests sent one after another."""
    results = []
    with httpx.Client(base_url=url, timeout=LEVEL_TIMEOUT) as http:
        for _ in range(count):
            if time.monotonic() > deadline:
                results.append((0.0, 0, False))
                continue
            started = time.perf_counter()
            try:
                reply = http.post("/v1/generate", json=REQUEST)
                ok = reply.status_code == 200
                tokens = reply.json()["samples"][0]["tokens"] if ok else 0
            except httpx.HTTPError:
                ok, tokens = False, 0
            results.append((time.perf_counter() - started, tokens, ok))
    return results


def run_level(url: str, clients: int, per_client: int, memory: MemoryWatch) -> dict:
    deadline = time.monotonic() + LEVEL_TIMEOUT
    first_sample = len(memory.samples)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        outcomes = [r for rs in pool.map(lambda _: client(url, per_client, deadline), range(clients)) for r in rs]
    wall = time.perf_counter() - started
    latencies = sorted(latency for latency, _, ok in outcomes if ok)
    rss = memory.samples[first_sample:] or [memory.rss()]
    return {
        "clients": clients,
        "requests": len(outcomes),
        "failures": sum(not ok for _, _, ok in outcomes),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_latency_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3)
        if latencies
        else None,
        "tokens_per_s": round(sum(tokens for _, tokens, _ in outcomes) / wall),
        "rss_mb_max": round(max(rss), 1),
        "rss_mb_end": round(memory.rss(), 1),
    }


def series(checkpoint: Path, env: dict, precision: str = "fp32") -> dict:
    """All the levels against one server process."""
    server, url = start_server(checkpoint, env, precision)
    try:
        client(url, 2, time.monotonic() + LEVEL_TIMEOUT)  # warm up: first requests allocate what they need
        memory = MemoryWatch(server.pid)
        rss_start = memory.rss()
        levels = []
        for clients, per_client in LEVELS:
            levels.append(run_level(url, clients, per_client, memory))
            print(f"  {levels[-1]}", flush=True)
        memory.stopped.set()
    finally:
        server.terminate()
        server.wait(timeout=30)
    single, last = levels[0], levels[-1]
    return {
        "levels": levels,
        "tokens_per_s_32_over_1": round(last["tokens_per_s"] / single["tokens_per_s"], 2),
        "failures": sum(level["failures"] for level in levels),
        "rss_mb_after_warmup": round(rss_start, 1),
        "rss_mb_growth_last_32_level": round(last["rss_mb_end"] - levels[-2]["rss_mb_end"], 1),
    }


def main() -> None:
    checkpoint = make_checkpoint() / "best.pt"
    own = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    report("serve_load", {
        "model": "char LSTM 2x512 (2 training steps: near-random weights), 200 tokens per request",
        "torch_default_threads": series(checkpoint, own),
        "one_thread": series(checkpoint, {**own, "OMP_NUM_THREADS": "1"}),
        "int8_torch_default_threads": series(checkpoint, own, "int8"),  # sample.precision int8 (issue 30)
        "goal": "tokens/s at 32 clients >= 5x one client; no failures; flat memory",
    })  # fmt: skip


if __name__ == "__main__":
    main()

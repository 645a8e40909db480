"""Issue 8 benchmarks: memory does not grow with the corpus, and 1 vs 2 CPU processes.

1. Peak resident memory of `rnngen train` (char 1x256 LSTM, 40 steps) on a 2 GB token file vs a
   20 MB one. The prepared data is synthesised directly (random ids, as `rnngen prepare` would
   write them) so the benchmark measures training, not preparation. Goal: within 10%.
2. Training tokens/s of one process vs two processes under torchrun (gloo) on the same data and
   the same per-process batch. On a 2-core machine two processes share the cores, so expect
   little or no gain; the figure is reported as measured.
    python bench/ddp_memory.py [--big-gb 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import report, scratch

VOCAB = 96
STEP_ARGS = ["model.cell=lstm", "model.num_layers=1", "model.hidden_size=256", "model.embedding_dim=32",
             "train.batch_size=32", "train.seq_len=64", "train.max_epochs=null", "train.eval_every=1000000",
             "train.save_every=20", "train.log_every=10", "train.sample_length=0", "train.device=cpu"]  # fmt: skip


def synthesise(directory: Path, tokens: int) -> Path:
    """A prepared-data directory with `tokens` random ids (uint16), a tiny val split and a stub source."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "source.txt"
    source.write_text("synthetic\n")
    train = directory / "train.bin"
    if not train.exists() or train.stat().st_size != tokens * 2:
        rng = np.random.default_rng(0)
        with open(train, "wb") as f:
            for start in range(0, tokens, 1 << 26):
                rng.integers(1, VOCAB, min(1 << 26, tokens - start), dtype=np.uint16).tofile(f)
    val_tokens = 20_000
    np.random.default_rng(1).integers(1, VOCAB, val_tokens, dtype=np.uint16).tofile(directory / "val.bin")
    stat = source.stat()
    settings = {
        "level": "char",
        "lowercase": False,
        "min_freq": 1,
        "max_vocab": None,
        "val_fraction": 0.05,
        "errors": "strict",
    }
    meta = {
        "format_version": 1, "settings": settings, "dtype": "uint16",
        "sources": [{"name": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": "synthetic"}],
        "counts": {"tokens": tokens + val_tokens, "chars": tokens + val_tokens, "train_tokens": tokens,
                   "val_tokens": val_tokens, "val_chars": val_tokens - 1, "vocab_size": VOCAB, "unk_tokens": 0},
    }  # fmt: skip
    (directory / "meta.json").write_text(json.dumps(meta))
    tokens_list = [["<unk>", 0]] + [[chr(32 + i), 1] for i in range(VOCAB - 1)]
    (directory / "vocab.json").write_text(
        json.dumps({"level": "char", "lowercase": False, "unk": "<unk>", "tokens": tokens_list})
    )
    return source


def train_sets(prepared: Path, run: Path, steps: int) -> list[str]:
    """--set items for a short training run on a synthesised prepared directory."""
    return [
        f"data.path={prepared / 'source.txt'}",
        f"data.prepared_dir={prepared}",
        f"train.out_dir={run}",
        f"train.max_steps={steps}",
        *STEP_ARGS,
    ]


def train_peak_mb(prepared: Path, run: Path, steps: int) -> float:
    """Peak RSS (MB) of a training subprocess, read from its own rusage."""
    sets = train_sets(prepared, run, steps)
    code = (
        "import resource, sys, runpy\n"
        "sys.argv = ['rnngen'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('rnngen', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    args = [sys.executable, "-c", code, "-q", "train", "--overwrite", *[x for s in sets for x in ("--set", s)]]
    proc = subprocess.run(args, capture_output=True, text=True)
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK")]
    if proc.returncode != 0 or not peak:
        sys.exit(f"training failed:\n{proc.stderr[-3000:]}")
    return int(peak[-1].split()[1]) / 1024


def tokens_per_s(prepared: Path, run: Path, processes: int, steps: int = 60) -> float:
    sets = train_sets(prepared, run, steps)
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    proc = subprocess.run([*launcher, "-m", "rnngen", "-q", "train", "--overwrite", *[x for s in sets for x in ("--set", s)]],
                          capture_output=True, text=True, env=env)  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"training failed:\n{proc.stderr[-3000:]}")
    with open(run / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    return (int(rows[-1]["tokens"]) - int(rows[0]["tokens"])) / (
        float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-gb", type=float, default=2.0)
    args = parser.parse_args()
    work = scratch("ddp_memory")
    small = work / "small"
    big = work / "big"
    synthesise(small, 10_000_000)  # 20 MB of uint16 ids
    start = time.perf_counter()
    synthesise(big, int(args.big_gb * 1e9 / 2))
    made = time.perf_counter() - start
    small_peak = train_peak_mb(small, work / "run_small", 40)
    big_peak = train_peak_mb(big, work / "run_big", 40)
    one = tokens_per_s(small, work / "run_one", 1)
    two = tokens_per_s(small, work / "run_two", 2)
    report("ddp_memory", {
        "small_token_file_mb": round((small / "train.bin").stat().st_size / 1e6),
        "big_token_file_mb": round((big / "train.bin").stat().st_size / 1e6),
        "synthesis_s": round(made, 1),
        "peak_rss_small_mb": round(small_peak),
        "peak_rss_big_mb": round(big_peak),
        "growth": f"{(big_peak / small_peak - 1):+.1%}",
        "tokens_per_s_1_process": round(one),
        "tokens_per_s_2_processes": round(two),
        "goal": "peak RSS within 10%",
        "machine_cores": os.cpu_count(),
        "max_rss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""SIGKILL soak: kill `rnngen train`, `prepare` and `sample --report-copying` at random moments, many times.

Training: each trial starts (or resumes) a run in a subprocess and kills it with SIGKILL after a
random delay, so kills land in start-up, preparing, training steps and checkpoint writes alike.
After every kill last.pt, last.prev.pt and best.pt must load and last.pt never goes back in
steps; the next trial resumes. A run that reaches max_steps is compared with one that was never
interrupted: the weights must be identical (the lost steps are recomputed from the saved RNG
state and data position).

Prepare: two corpora of the same size take turns being prepared (--force) into one directory and
are killed part-way; the directory must then be whole (one corpus's data, equal to an
uninterrupted prepare) or be refused as damaged, and a plain `rnngen prepare` must then give
exactly the uninterrupted result.

Copy index: `sample --report-copying` is killed while it builds the index of a large training
split; the cache must be absent or whole, and the next run must print what an uninterrupted one
printed.

The test suite runs a few such trials (tests/test_reliability_faults.py); this runs many.

    python bench/kill_soak.py [--trials 40] [--prepare-trials 12] [--copy-trials 12] [--steps 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import report, scratch

from rnngen import checkpoint
from rnngen.data.prepare import PreparedDamaged, open_prepared
from rnngen.data.sources import demo_text
from rnngen.generate.memorisation import _read_cache


def write_config(work: Path, corpus: Path, name: str, steps: int) -> Path:
    config = {
        "data": {"path": str(corpus), "level": "char", "val_fraction": 0.05},
        "model": {"cell": "lstm", "embedding_dim": 32, "hidden_size": 64, "num_layers": 1, "dropout": 0.0},
        "train": {
            "out_dir": str(work / name), "batch_size": 8, "seq_len": 32, "max_epochs": None, "max_steps": steps,
            "warmup_steps": 10, "save_every": 4, "eval_every": 50, "log_every": 50, "eval_batch_size": 8,
            "sample_length": 20, "threads": 1, "device": "cpu",
        },
    }  # fmt: skip
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def rnngen(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnngen", "-q", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def train(config: Path, resume: bool) -> subprocess.Popen:
    return rnngen("train", "--config", str(config), *(["--resume"] if resume else []))


def killed_after(proc: subprocess.Popen, delay: float) -> tuple[int, str, str]:
    """Kill `proc` after `delay` seconds (unless it ended first); its exit code, stdout and stderr."""
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    return proc.returncode, out, err


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    proc = rnngen(*args)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"rnngen {' '.join(args)} failed: {err[-2000:]}")
    return time.perf_counter() - started, out


def step_of(path: Path) -> int:
    return checkpoint.load(path)[checkpoint.TRAINER_STATE]["step"]


def max_weight_difference(a: Path, b: Path) -> float:
    left, right = checkpoint.load(a)[checkpoint.MODEL_STATE], checkpoint.load(b)[checkpoint.MODEL_STATE]
    return max((left[k] - right[k]).abs().max().item() for k in right)


def training_trials(work: Path, args, rng: random.Random, failures: list[str]) -> dict:
    corpus = work / "corpus.txt"
    corpus.write_text(demo_text()[:300_000], encoding="utf-8")
    reference_config = write_config(work, corpus, "straight", args.steps)
    started = time.perf_counter()
    if train(reference_config, resume=False).wait() != 0:
        sys.exit("the uninterrupted reference run failed")
    max_delay = args.max_delay or time.perf_counter() - started  # kills spread over start-up, steps and saves
    reference = work / "straight" / "last.pt"
    kills = before_first_save = completed = 0
    leftovers: set[Path] = set()  # temporary files a kill left beside the files being written
    differences: list[float] = []
    run_index, last_step = 0, 0
    config = write_config(work, corpus, f"run-{run_index}", args.steps)
    start = time.perf_counter()
    for trial in range(args.trials):
        run = work / f"run-{run_index}"
        code, _, err = killed_after(train(config, resume=(run / "last.pt").exists()), rng.uniform(0.2, max_delay))
        if code == 0:  # the run finished before the kill: compare it, start the next one
            completed += 1
            differences.append(max_weight_difference(run / "last.pt", reference))
            run_index, last_step = run_index + 1, 0
            config = write_config(work, corpus, f"run-{run_index}", args.steps)
            continue
        if code != -signal.SIGKILL:
            failures.append(f"train trial {trial}: exit {code}: {err.strip()[-300:]}")
            continue
        kills += 1
        leftovers |= {p for p in run.rglob("*") if ".tmp-" in p.name}
        if not (run / "last.pt").exists():
            before_first_save += 1
            continue
        for name in ("last.pt", "last.prev.pt", "best.pt"):
            if (run / name).exists():
                try:
                    checkpoint.load(run / name)
                except Exception as e:  # noqa: BLE001 - any failure to load is what this soak looks for
                    failures.append(f"train trial {trial}: {name} does not load: {e}")
        step = step_of(run / "last.pt")
        if step < last_step:
            failures.append(f"train trial {trial}: last.pt went back from step {last_step} to {step}")
        last_step = step
    mismatched = [d for d in differences if d > 1e-6]
    if mismatched:
        failures.append(
            f"{len(mismatched)} killed-and-resumed runs differ from the straight run (max {max(mismatched):.3g})"
        )
    return {
        "train_trials": args.trials,
        "train_max_delay_s": round(max_delay, 2),
        "train_sigkills": kills,
        "train_kills_before_first_save": before_first_save,
        "train_runs_completed_through_kills": completed,
        "max_weight_difference_vs_uninterrupted": max(differences, default=None),
        "train_leftover_temp_files": len(leftovers),
        "train_seconds": round(time.perf_counter() - start, 1),
    }


def prepare_trials(work: Path, args, rng: random.Random, failures: list[str]) -> dict:
    """Two same-sized corpora prepared in turn into one directory, killed part-way; never a silent mix."""
    text = demo_text()
    text = (text * (args.prepare_mb * 1_000_000 // len(text) + 1))[: args.prepare_mb * 1_000_000]
    corpora = [work / "prepare-a.txt", work / "prepare-b.txt"]
    corpora[0].write_text(text, encoding="utf-8")
    corpora[1].write_text(text.swapcase(), encoding="utf-8")  # same size, other ids
    straight, max_delay = [], 0.0
    for i, corpus in enumerate(corpora):
        seconds, _ = timed("prepare", str(corpus), "--level", "char", "--out", str(work / f"prepared-straight-{i}"))
        straight.append(open_prepared(work / f"prepared-straight-{i}").meta["files"])
        max_delay = max(max_delay, seconds)
    target = work / "prepared-killed"
    kills = refused = whole = 0
    for trial in range(args.prepare_trials):
        which = trial % 2
        proc = rnngen("prepare", str(corpora[which]), "--level", "char", "--out", str(target), "--force")
        code, _, err = killed_after(proc, rng.uniform(0.1, max_delay))
        if code not in (0, -signal.SIGKILL):
            failures.append(f"prepare trial {trial}: exit {code}: {err.strip()[-300:]}")
            continue
        kills += code == -signal.SIGKILL
        try:
            files = open_prepared(target).meta["files"]
            whole += 1
            if files not in straight:
                failures.append(f"prepare trial {trial}: the directory opens but matches no uninterrupted prepare")
        except PreparedDamaged:
            refused += 1
        proc = rnngen("prepare", str(corpora[which]), "--level", "char", "--out", str(target))
        _, err = proc.communicate()
        if proc.returncode != 0 or open_prepared(target).meta["files"] != straight[which]:
            failures.append(f"prepare trial {trial}: preparing again gave exit {proc.returncode}: {err[-300:]}")
    return {
        "prepare_trials": args.prepare_trials,
        "prepare_mb": args.prepare_mb,
        "prepare_max_delay_s": round(max_delay, 2),
        "prepare_sigkills": kills,
        "prepare_dirs_whole_after_kill": whole,
        "prepare_dirs_refused_as_damaged_after_kill": refused,
    }


def copy_index_trials(work: Path, args, rng: random.Random, failures: list[str]) -> dict:
    """`sample --report-copying` killed while it builds the index; the cache is absent or whole, never wrong."""
    corpus = work / "copy-corpus.txt"
    text = demo_text()
    corpus.write_text((text * (args.copy_mb * 1_000_000 // len(text) + 1))[: args.copy_mb * 1_000_000], "utf-8")
    config = write_config(work, corpus, "copy-run", 1)
    if train(config, resume=False).wait() != 0:
        sys.exit("training the copy-index run failed")
    run = work / "copy-run"
    cache = run / "prepared" / "copy_index.npz"
    command = ("sample", "--run", str(run), "--random-seed", "1", "--length", "60", "--report-copying")
    max_delay, expected = timed(*command, "--format", "jsonl")
    kills = whole_caches = 0
    for trial in range(args.copy_trials):
        cache.unlink(missing_ok=True)
        code, _, err = killed_after(rnngen(*command, "--format", "jsonl"), rng.uniform(0.1, max_delay))
        if code not in (0, -signal.SIGKILL):
            failures.append(f"copy trial {trial}: exit {code}: {err.strip()[-300:]}")
            continue
        kills += code == -signal.SIGKILL
        if cache.exists():
            tokens = open_prepared(run / "prepared").ids("train").shape[0]
            checksum = open_prepared(run / "prepared").checksum("train")
            whole = _read_cache(cache, np.array([tokens, checksum], dtype=np.int64)) is not None
            whole_caches += whole
            if not whole:
                failures.append(f"copy trial {trial}: the kill left a damaged copy_index.npz")
        _, out = timed(*command, "--format", "jsonl")
        if out != expected:
            failures.append(f"copy trial {trial}: the report after the kill differs from an uninterrupted one")
    return {
        "copy_trials": args.copy_trials,
        "copy_mb": args.copy_mb,
        "copy_max_delay_s": round(max_delay, 2),
        "copy_sigkills": kills,
        "copy_whole_caches_after_kill": whole_caches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="kills in training")
    parser.add_argument("--max-delay", type=float, help="longest wait before a kill (default: the straight run's time)")
    parser.add_argument("--steps", type=int, default=300, help="max_steps of each run")
    parser.add_argument("--prepare-trials", type=int, default=12, help="kills in prepare")
    parser.add_argument("--prepare-mb", type=int, default=8, help="size of each corpus prepared")
    parser.add_argument("--copy-trials", type=int, default=12, help="kills in copy-index building")
    parser.add_argument("--copy-mb", type=int, default=8, help="size of the corpus whose index is built")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = scratch("kill_soak")
    for old in work.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    rng = random.Random(args.seed)
    failures: list[str] = []
    start = time.perf_counter()
    figures = {
        **training_trials(work, args, rng, failures),
        **prepare_trials(work, args, rng, failures),
        **copy_index_trials(work, args, rng, failures),
    }
    report("kill_soak", {
        **figures,
        "failures": len(failures),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "goal": "0 failures: every survivor loads or is refused as damaged, steps never go back, "
                "completed runs and repaired files equal uninterrupted ones",
    })  # fmt: skip
    for failure in failures:
        print("FAIL", failure, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

"""SIGKILL soak: kill `rnngen train` at random moments, many times, and check that nothing is lost.

Each trial starts (or resumes) a run in a subprocess and kills it with SIGKILL after a random
delay, so kills land in start-up, preparing, training steps and checkpoint writes alike. After
every kill last.pt (and best.pt) must load and never go back in steps; the next trial resumes.
A run that reaches max_steps is compared with one that was never interrupted: the weights must
be identical (the lost steps are recomputed from the saved RNG state and data position).
The test suite runs a few such trials (tests/test_reliability_faults.py); this runs many.

    python bench/kill_soak.py [--trials 40] [--max-delay SECONDS] [--steps 300] [--seed 0]
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

import torch
import yaml
from common import report, scratch

from rnngen import checkpoint
from rnngen.sources import demo_text


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


def train(config: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "rnngen", "-q", "train", "--config", str(config)] + (["--resume"] if resume else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def step_of(path: Path) -> int:
    return checkpoint.load(path)[checkpoint.TRAINER_STATE]["step"]


def max_weight_difference(a: Path, b: Path) -> float:
    left, right = checkpoint.load(a)[checkpoint.MODEL_STATE], checkpoint.load(b)[checkpoint.MODEL_STATE]
    return max((left[k] - right[k]).abs().max().item() for k in right)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--max-delay", type=float, help="longest wait before a kill (default: the straight run's time)")
    parser.add_argument("--steps", type=int, default=300, help="max_steps of each run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = scratch("kill_soak")
    for old in work.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    corpus = work / "corpus.txt"
    corpus.write_text(demo_text()[:300_000], encoding="utf-8")
    reference_config = write_config(work, corpus, "straight", args.steps)
    started = time.perf_counter()
    if train(reference_config, resume=False).wait() != 0:
        sys.exit("the uninterrupted reference run failed")
    max_delay = args.max_delay or time.perf_counter() - started  # kills spread over start-up, steps and saves
    reference = work / "straight" / "last.pt"

    rng = random.Random(args.seed)
    failures: list[str] = []
    kills = before_first_save = completed = 0
    leftovers: set[Path] = set()  # temporary files a kill left beside the files being written
    differences: list[float] = []
    run_index, last_step = 0, 0
    config = write_config(work, corpus, f"run-{run_index}", args.steps)
    start = time.perf_counter()
    for trial in range(args.trials):
        run = work / f"run-{run_index}"
        proc = train(config, resume=(run / "last.pt").exists())
        time.sleep(rng.uniform(0.2, max_delay))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode == 0:  # the run finished before the kill: compare it, start the next one
            completed += 1
            differences.append(max_weight_difference(run / "last.pt", reference))
            run_index, last_step = run_index + 1, 0
            config = write_config(work, corpus, f"run-{run_index}", args.steps)
            continue
        if proc.returncode != -signal.SIGKILL:
            failures.append(f"trial {trial}: exit {proc.returncode}: {err.strip()[-300:]}")
            continue
        kills += 1
        leftovers |= {p for p in run.rglob("*") if ".tmp-" in p.name}
        if not (run / "last.pt").exists():
            before_first_save += 1
            continue
        for name in ("last.pt", "best.pt"):
            if (run / name).exists():
                try:
                    checkpoint.load(run / name)
                except Exception as e:  # noqa: BLE001 - any failure to load is what this soak looks for
                    failures.append(f"trial {trial}: {name} does not load: {e}")
        step = step_of(run / "last.pt")
        if step < last_step:
            failures.append(f"trial {trial}: last.pt went back from step {last_step} to {step}")
        last_step = step
    wall = time.perf_counter() - start
    mismatched = [d for d in differences if d > 1e-6]
    if mismatched:
        failures.append(
            f"{len(mismatched)} killed-and-resumed runs differ from the straight run (max {max(mismatched):.3g})"
        )

    report("kill_soak", {
        "trials": args.trials,
        "max_delay_s": round(max_delay, 2),
        "sigkills": kills,
        "kills_before_first_save": before_first_save,
        "runs_completed_through_kills": completed,
        "max_weight_difference_vs_uninterrupted": max(differences, default=None),
        "leftover_temp_files": len(leftovers),
        "failures": len(failures),
        "seconds": round(wall, 1),
        "torch": torch.__version__,
        "goal": "0 failures: every survivor loads, steps never go back, completed runs equal the straight run",
    })  # fmt: skip
    for failure in failures:
        print("FAIL", failure, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

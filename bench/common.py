"""Helpers shared by the benchmark scripts: scratch space, timing a CLI run, reporting."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("RNNGEN_BENCH_DIR", Path(__file__).parent / "out"))
SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def scratch(name: str) -> Path:
    path = OUT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_cli(*args: str, cwd: Path | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `python -m rnngen ARGS`; returns (wall seconds, peak RSS of the child in MB, process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rnngen", *args], capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        sys.exit(f"rnngen {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, max(peak, before) / 1024, proc


def report(name: str, figures: dict) -> None:
    """Print the figures and keep them in bench/out/<name>.json."""
    print(f"== {name}")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    (scratch(".") / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")

"""Run directories: their layout, runs/LATEST, the training lock, and finding a checkpoint."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rnngen.errors import CheckpointError, UserError, WriteError
from rnngen.fileio import make_dir, write_text

LATEST_DIR = Path("runs")


class RunPaths:
    """Where a run keeps its files."""

    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir)
        self.config = self.root / "config.yaml"
        self.last = self.root / "last.pt"
        self.best = self.root / "best.pt"
        self.metrics = self.root / "metrics.csv"
        self.samples = self.root / "samples"
        self.lock = self.root / ".lock"


def mark_latest(out_dir: str | Path) -> None:
    """Record the run in <parent>/LATEST so `rnngen sample` with no options finds it."""
    out_dir = Path(out_dir).resolve()
    write_text(out_dir.parent / "LATEST", str(out_dir) + "\n")


def latest_run() -> Path:
    pointer = LATEST_DIR / "LATEST"
    if not pointer.exists():
        raise CheckpointError(
            "no trained model found (runs/LATEST does not exist); train one with `rnngen train` or `make demo`, "
            "or pass --checkpoint FILE or --run DIR"
        )
    return Path(pointer.read_text(encoding="utf-8").strip())


def checkpoint_in(run_dir: str | Path) -> Path:
    """A run's best.pt, else its last.pt."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        what = "checkpoint" if run_dir.suffix == ".pt" else "run directory"
        raise CheckpointError(f"{what} {run_dir} does not exist; train with `rnngen train` first")
    for name in ("best.pt", "last.pt"):
        if (run_dir / name).exists():
            return run_dir / name
    raise CheckpointError(f"run directory {run_dir} holds no checkpoint yet (no best.pt or last.pt); train it first")


def find_checkpoint(checkpoint=None, run=None, config_path=None, sets=()) -> Path:
    """The checkpoint a command was pointed at: --checkpoint, --run, --config (its train.out_dir) or
    runs/LATEST, in that order; only one of --checkpoint and --run may be given."""
    if checkpoint and run:
        raise UserError("give only one of --checkpoint and --run")
    if checkpoint:
        return Path(checkpoint)
    if run:
        return checkpoint_in(run)
    if config_path or any(s.startswith("train.out_dir=") for s in sets):
        from rnngen.config import resolve

        return checkpoint_in(resolve(config_path, sets, {}).train.out_dir)
    return checkpoint_in(latest_run())


class RunLock:
    """An exclusive lock on a run directory, so two trainings never write the same files.

    flock is released by the kernel when the process dies, so a killed run never leaves a
    stale lock behind.
    """

    def __init__(self, paths: RunPaths):
        self.path = paths.lock
        self.handle = None

    def __enter__(self):
        make_dir(self.path.parent, "train.out_dir")
        try:
            self.handle = open(self.path, "a+")
        except OSError as e:
            raise WriteError(
                f"cannot write in run directory {self.path.parent}: {e.strerror}; set train.out_dir to a writable place",
                user_fixable=True,
            ) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise UserError(
                f"run directory {self.path.parent} is in use by a training process (PID {holder}); "
                "wait for it to finish, stop it, or set a different train.out_dir"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

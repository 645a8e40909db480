"""Run directories: their layout, runs/LATEST, the training lock, and finding the checkpoint the user meant."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rnngen.errors import CheckpointError, UserError, WriteError
from rnngen.fileio import make_dir, write_text

LATEST_DIR = Path("runs")


class RunPaths:
    """Where a run keeps its files."""

    CHECKPOINTS = ("best.pt", "last.pt")  # a run's checkpoints, the one to use first

    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir)
        self.config = self.root / "config.yaml"
        self.best, self.last = (self.root / name for name in self.CHECKPOINTS)
        self.previous = self.root / "last.prev.pt"  # the save before last.pt, in case last.pt is damaged
        self.metrics = self.root / "metrics.csv"
        self.samples = self.root / "samples"
        self.lock = self.root / ".lock"

    def checkpoint(self) -> Path | None:
        """best.pt, else last.pt; None before the run saved either."""
        return next((path for path in (self.best, self.last) if path.exists()), None)


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
    run = _pointed_run(pointer)
    if run is None:
        raise CheckpointError(
            f"{pointer} is damaged: it should hold the path of the latest run directory; pass --run DIR"
            f"{_runs_in(pointer.parent)} (every `rnngen train` writes {pointer} again)"
        )
    if not any((run / name).is_file() for name in ("best.pt", "last.pt")):
        state = "holds no checkpoint (yet)" if run.is_dir() else "no longer exists"
        raise CheckpointError(f"{pointer} names {run}, which {state}; pass --run DIR{_runs_in(pointer.parent)}")
    return run


def _pointed_run(pointer: Path) -> Path | None:
    """The one absolute path that LATEST holds, or None when it holds anything else."""
    try:
        lines = pointer.read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) != 1 or "\0" in lines[0] or not Path(lines[0]).is_absolute():
        return None
    try:
        Path(lines[0]).stat()
    except FileNotFoundError:
        pass
    except OSError:  # a name too long for the file system, a loop of links, ...
        return None
    return Path(lines[0])


def _runs_in(directory: Path) -> str:
    runs = sorted(str(p.parent) for name in ("last.pt", "best.pt") for p in directory.glob(f"*/{name}"))
    return f" (runs there: {', '.join(dict.fromkeys(runs))})" if runs else ""


def checkpoint_in(run_dir: str | Path) -> Path:
    """A run's best.pt, else its last.pt; a checkpoint file is itself."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        what = "checkpoint" if run_dir.suffix == ".pt" else "run directory"
        raise CheckpointError(f"{what} {run_dir} does not exist; train with `rnngen train` first")
    found = RunPaths(run_dir).checkpoint()
    if found is None:
        raise CheckpointError(
            f"run directory {run_dir} holds no checkpoint yet (no {' or '.join(RunPaths.CHECKPOINTS)}); train it first"
        )
    return found


def resolve_checkpoint(checkpoint=None, run=None, out_dir=None) -> Path:
    """The checkpoint the user meant, for every command and the API.

    --checkpoint FILE as given; else the best.pt (else last.pt) of --run (a run directory or a
    checkpoint file), else of a config's train.out_dir; else of the latest run (runs/LATEST).
    """
    if checkpoint:
        return Path(checkpoint)
    if run:
        return checkpoint_in(run)
    if out_dir:
        return checkpoint_in(out_dir)
    return checkpoint_in(latest_run())


def source_checkpoint(target: str | Path, key: str) -> Path:
    """checkpoint_in for a config key that names another run (train.init_from, data.vocab_from)."""
    try:
        return checkpoint_in(target)
    except CheckpointError as e:
        raise CheckpointError(f"{key}: {e}") from None


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

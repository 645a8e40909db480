"""Finding the checkpoint the user meant: one resolver for every command and the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnngen.errors import CheckpointError
from rnngen.runs import RunPaths, mark_latest, resolve_checkpoint


def make_run(root: Path, *names: str) -> Path:
    root.mkdir(parents=True)
    for name in names:
        (root / name).write_bytes(b"")
    return root


def test_order_is_checkpoint_run_out_dir_then_latest(tmp_path):
    a = make_run(tmp_path / "runs" / "a", "best.pt", "last.pt")
    b = make_run(tmp_path / "runs" / "b", "last.pt")
    mark_latest(b)
    assert resolve_checkpoint(checkpoint="any/file.pt") == Path(
        "any/file.pt"
    )  # as given; loading says if it is missing
    assert resolve_checkpoint(run=a) == a / "best.pt"
    assert resolve_checkpoint(run=b) == b / "last.pt"  # no best.pt yet
    assert resolve_checkpoint(run=a / "last.pt") == a / "last.pt"  # a file given as the run is itself
    assert resolve_checkpoint(out_dir=a) == a / "best.pt"
    assert resolve_checkpoint() == (b / "last.pt").resolve()


def test_missing_runs_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="runs/LATEST does not exist"):
        resolve_checkpoint()
    with pytest.raises(CheckpointError, match="holds no checkpoint yet"):
        resolve_checkpoint(run=make_run(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="run directory nowhere does not exist"):
        resolve_checkpoint(run="nowhere")


def test_run_paths_name_the_checkpoints(tmp_path):
    paths = RunPaths(tmp_path)
    assert (paths.best.name, paths.last.name) == RunPaths.CHECKPOINTS == ("best.pt", "last.pt")
    assert paths.checkpoint() is None
    paths.last.write_bytes(b"")
    assert paths.checkpoint() == paths.last

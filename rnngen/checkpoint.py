"""Checkpoints: one plain dict of tensors and plain data, saved atomically, loaded safely.

A checkpoint is self-contained: the resolved config, the model arguments, the vocabulary and
the weights are enough to sample; the optimizer, schedule, step, data position, hidden state
and RNG states let `train --resume` continue exactly. Loading uses
torch.load(weights_only=True), so a checkpoint cannot run code.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import torch

from rnngen import __version__
from rnngen.errors import CheckpointError
from rnngen.fileio import write_bytes

FORMAT = "rnngen-checkpoint"
FORMAT_VERSION = 1

# Keys of the checkpoint dict.
CONFIG = "config"
MODEL_ARGS = "model_args"
MODEL_STATE = "model_state"
VOCAB = "vocab"
OPTIMIZER_STATE = "optimizer_state"
TRAINER_STATE = "trainer_state"  # step, epoch, window, lr scale, best loss, patience, hidden state
RNG = "rng"
SUMMARY = "summary"  # last losses, tokens seen, wall time: what `rnngen info` shows


def save(path: str | Path, payload: dict) -> None:
    """Write atomically: a kill or a failed write leaves the previous checkpoint intact.

    The checkpoint is serialized in memory first, because torch.save reports a failed write (disk
    full, file too large, I/O error) as an opaque RuntimeError; a plain write names the cause.
    """
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "rnngen_version": __version__, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getbuffer())


def load(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is a CheckpointError naming the file and the fix."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a checkpoint file such as {path / 'best.pt'}, or use --run")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist{_listing(path.parent)}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it is about to refuse
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path} is not a safe rnngen checkpoint: it contains Python objects that could run code, "
                "so it was refused without loading them"
            ) from None
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - unpickling arbitrary bytes fails in many ways (KeyError, IndexError, ...)
        raise CheckpointError(
            f"{path} is truncated or corrupt ({_first_line(e)}); use another checkpoint of the run, e.g. last.pt or best.pt"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnngen checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer rnngen (checkpoint format {version}, this rnngen reads up to "
            f"{FORMAT_VERSION}); upgrade rnngen (pip install -U rnngen) to use it"
        )
    return payload


def _first_line(error: Exception) -> str:
    """The first sentence of an error, without torch's long advice about internal errors."""
    text = str(error).strip().splitlines()
    return text[0].split(". ")[0][:200] if text else type(error).__name__


def _listing(directory: Path) -> str:
    found = sorted(p.name for p in directory.glob("*.pt")) if directory.is_dir() else []
    if found:
        return f"; checkpoints in {directory}: {', '.join(found)}"
    return "; train one first with `rnngen train` (or `make demo`)"

"""Checkpoints: one plain dict of tensors and plain data, saved atomically, loaded safely.

A checkpoint is self-contained: the resolved config, the model arguments, the vocabulary and
the weights are enough to sample; the optimizer, schedule, step, data position, hidden state
and RNG states let `train --resume` continue exactly. Loading uses
torch.load(weights_only=True), so a checkpoint cannot run code.

Every checkpoint carries a CRC-32 of all its contents (tensors by dtype, shape and bytes; plain
data by value), written at save time and checked at load: a file whose bytes changed after it
was written (a copy that stopped half-way, a disk error, a hand edit) is refused, never sampled
from. Checkpoints written before the checksum existed load without that check. The structure
(entries, vocabulary against the model arguments, tensor shapes against the model they describe)
is checked as well, so damage always ends in a CheckpointError naming the file.
"""

from __future__ import annotations

import io
import pickle
import shlex
import warnings
from pathlib import Path

import torch

from rnngen import __version__
from rnngen.errors import CheckpointError
from rnngen.fileio import crc32, keep_previous, write_bytes

FORMAT = "rnngen-checkpoint"
FORMAT_VERSION = 1

# Keys of the checkpoint dict.
CONFIG = "config"
MODEL_ARGS = "model_args"
MODEL_STATE = "model_state"
VOCAB = "vocab"
TRAINED_STATE = "trained_state"  # last.pt under train.average: the trained weights; model_state is their average
OPTIMIZER_STATE = "optimizer_state"
TRAINER_STATE = "trainer_state"  # step, epoch, window, lr scale, best loss, patience, hidden state
RNG = "rng"
SPELLER = "speller"  # {"types": the training text's distinct tokens}: spells <unk> for open-vocabulary bpc
SUMMARY = "summary"  # last losses, tokens seen, wall time: what `rnngen info` shows
CHECKSUM = "checksum"  # CRC-32 of everything else, in order (see _digest)
REQUIRED = (CONFIG, MODEL_ARGS, MODEL_STATE, VOCAB)
RESUMABLE = (OPTIMIZER_STATE, TRAINER_STATE, RNG)  # what last.pt has beyond best.pt


class _Damaged(Exception):
    """Why a file is not a usable checkpoint; load() and load_for_resume() add what to do about it."""


def save(path: str | Path, payload: dict, previous: str | Path | None = None) -> None:
    """Write atomically: a kill or a failed write leaves the previous checkpoint intact.

    With `previous`, the file being replaced is kept under that name first (last.pt -> last.prev.pt),
    so one damaged save never leaves a run without a checkpoint to resume from. The checkpoint is
    serialized in memory first, because torch.save reports a failed write (disk full, file too large,
    I/O error) as an opaque RuntimeError; a plain write names the cause.
    """
    contents = {k: v for k, v in payload.items() if k != CHECKSUM}  # a loaded checkpoint saved again
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "rnngen_version": __version__, **contents}
    payload[CHECKSUM] = _digest(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if previous is not None and Path(path).exists():
        keep_previous(path, previous)
    write_bytes(path, buffer.getbuffer())


def load(path: str | Path) -> dict:
    """Load and check a checkpoint; every failure is a CheckpointError naming the file and the fix."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a checkpoint file such as {path / 'best.pt'}, or use --run")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist{_listing(path.parent)}")
    try:
        return _load(path)
    except _Damaged as e:
        raise CheckpointError(f"{e}{_others(path)}") from None


def load_for_resume(last: Path, previous: Path, best: Path) -> dict:
    """last.pt, checked for everything a resume needs; if it is damaged, say which save can be used instead."""
    if not last.exists():
        if previous.exists():
            raise CheckpointError(f"nothing to resume: {last} does not exist; {_way_out(last, previous, best)}")
        raise CheckpointError(f"nothing to resume: {last} does not exist; start the run without --resume")
    try:
        return _resumable(_load(last), last)
    except _Damaged as e:
        raise CheckpointError(f"{e}; {_way_out(last, previous, best)}") from None


def restore(target, state: dict, path: str | Path) -> None:
    """Load weights (a module) or optimizer state into `target`; a mismatch is a CheckpointError naming `path`."""
    if isinstance(target, torch.nn.Module):
        problem = _shape_problem(target.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} is damaged: {problem}; its weights do not fit the model it describes")
    try:
        target.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path} is damaged: {_first_line(e)}{_others(Path(path))}") from None


# --------------------------------------------------------------------------- checks


def _load(path: Path) -> dict:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it is about to refuse
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise _Damaged(
                f"{path} is not a safe rnngen checkpoint: it contains Python objects that could run code, "
                "so it was refused without loading them"
            ) from None
        raise _Damaged(f"{path} is damaged or not a checkpoint ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - unpickling arbitrary bytes fails in many ways (KeyError, IndexError, ...)
        raise _Damaged(f"{path} is truncated or corrupt ({_first_line(e)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise _Damaged(f"{path} is not an rnngen checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _Damaged(
            f"{path} was written by a newer rnngen (checkpoint format {version}, this rnngen reads up to "
            f"{FORMAT_VERSION}); upgrade rnngen (pip install -U rnngen) to use it"
        )
    if CHECKSUM in payload and not _checksum_matches(payload):
        raise _Damaged(
            f"{path} is damaged: its contents no longer match the checksum written when it was saved "
            "(the file changed after it was written: a partial copy, a disk error or an edit)"
        )
    problem = _structure_problem(payload)
    if problem:
        raise _Damaged(f"{path} is damaged: {problem}")
    return payload


def _digest(value, running: int = 0) -> int:
    """CRC-32 over a checkpoint's contents in order: tensors by dtype, shape and bytes, plain data by value."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        running = crc32(f"T{tensor.dtype}{tuple(tensor.shape)}".encode(), running)
        return crc32(tensor.reshape(-1).view(torch.uint8).numpy(), running)
    if isinstance(value, dict):
        running = crc32(b"{%d" % len(value), running)
        for key, item in value.items():
            running = _digest(item, _digest(key, running))
        return running
    if isinstance(value, (list, tuple)):
        running = crc32(b"[%d" % len(value), running)
        for item in value:
            running = _digest(item, running)
        return running
    return crc32(f"{type(value).__name__}:{value!r};".encode("utf-8", "surrogatepass"), running)


def _checksum_matches(payload: dict) -> bool:
    stored = payload[CHECKSUM]
    return type(stored) is int and stored == _digest({k: v for k, v in payload.items() if k != CHECKSUM})


def _structure_problem(payload: dict) -> str | None:
    """What keeps the payload from being a usable model, or None."""
    for key in REQUIRED:
        if not isinstance(payload.get(key), dict):
            return f"its '{key}' entry is missing or not a mapping"
    state = payload[MODEL_STATE]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return "its weights are not a mapping of names to tensors"
    vocab = payload[VOCAB]
    tokens = vocab.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens) or len(set(tokens)) != len(tokens):
        return "its vocabulary is not a list of distinct token strings"
    if not isinstance(vocab.get("level"), str):
        return "its vocabulary has no tokenizer level"
    if payload[MODEL_ARGS].get("vocab_size") != len(tokens):
        return (
            f"its vocabulary has {len(tokens)} tokens but its model arguments say "
            f"{payload[MODEL_ARGS].get('vocab_size')!r}"
        )
    return None


def _resumable(payload: dict, path: Path) -> dict:
    """A neural run's last.pt holds optimizer, trainer and RNG state too (an n-gram run is counted again)."""
    if payload[MODEL_ARGS].get("cell") == "ngram":
        return payload
    missing = [key for key in RESUMABLE if not isinstance(payload.get(key), dict)]
    if missing or not isinstance(payload[TRAINER_STATE].get("step"), int):
        raise _Damaged(
            f"{path} cannot be resumed from: it has no {', '.join(missing) or 'step'} (a best.pt copied over it?)"
        )
    return payload


def _shape_problem(expected: dict, state: dict) -> str | None:
    """The first weight that is missing, unexpected or of the wrong shape, or None."""
    for name, tensor in expected.items():
        if name not in state:
            return f"it has no weights for {name}"
        if tuple(state[name].shape) != tuple(tensor.shape):
            return f"{name} is {list(state[name].shape)}, the model needs {list(tensor.shape)}"
    extra = [name for name in state if name not in expected]
    return f"it has weights the model does not use ({extra[0]})" if extra else None


def _way_out(last: Path, previous: Path, best: Path) -> str:
    """Which save of the run can replace a damaged last.pt: the save before it, else best.pt for sampling."""
    try:
        step = _resumable(_load(previous), previous).get(TRAINER_STATE, {}).get("step")
        copy = shlex.join(["cp", str(previous), str(last)])
        return f"the save before it, {previous} (step {step}), is intact: resume from it with `{copy}`, then run this command again"
    except (_Damaged, OSError):
        pass
    if best.exists():
        try:
            _load(best)
            return (
                f"no intact save to resume from; {best} is intact but holds no optimizer state: sample from it "
                f"(rnngen sample --checkpoint {shlex.quote(str(best))}) or start the run again with --overwrite"
            )
        except (_Damaged, OSError):
            pass
    return "no intact save to resume from; start the run again with --overwrite"


def _first_line(error: Exception) -> str:
    """The first sentence of an error, without torch's long advice about internal errors."""
    text = str(error).strip().splitlines()
    return text[0].split(". ")[0][:200] if text else type(error).__name__


def _others(path: Path) -> str:
    """The other checkpoints beside a damaged one."""
    found = [p for p in path.parent.glob("*.pt") if p.name != path.name] if path.parent.is_dir() else []
    order = {"best.pt": 0, "last.pt": 1, "last.prev.pt": 2}
    others = sorted(found, key=lambda p: (order.get(p.name, 3), p.name))
    return f"; use another checkpoint of the run: {' or '.join(map(str, others))}" if others else ""


def _listing(directory: Path) -> str:
    found = sorted(p.name for p in directory.glob("*.pt")) if directory.is_dir() else []
    if found:
        return f"; checkpoints in {directory}: {', '.join(found)}"
    return "; train one first with `rnngen train` (or `make demo`)"

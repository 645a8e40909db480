"""How much of a sample is copied from the training text (a memorisation check).

An index of every 8-token window of the training ids (a 64-bit rolling hash, sorted, with the
window's position) is built once and cached beside the prepared data. For a sample we look up
each of its 8-token windows; the share found is the window share, and every hit is extended
token by token against the real training ids to find the longest span copied verbatim (so hash
collisions can never inflate it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnngen.errors import UserError
from rnngen.fileio import atomic_path

WINDOW = 8
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
MAX_CANDIDATES = 64  # training positions checked per window when extending a copied span


@dataclass
class Copying:
    longest_span: int  # tokens copied verbatim in one piece (0 if no 8-token window is copied)
    window_share: float  # share of the sample's 8-token windows found in the training text
    windows: int

    def to_dict(self) -> dict:
        return {"longest_span": self.longest_span, "window_share": round(self.window_share, 4), "windows": self.windows}


def window_hashes(ids: np.ndarray) -> np.ndarray:
    """Hash of every WINDOW-token window: hashes[i] covers ids[i : i + WINDOW]."""
    ids = np.asarray(ids, dtype=np.uint64)
    count = len(ids) - WINDOW + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping modulo 2**64 is the point
        for k in range(WINDOW):
            hashes = hashes * _MULTIPLIER + ids[k : k + count] + np.uint64(1)
    return hashes


class CopyIndex:
    """Sorted window hashes of the training ids, with where each window starts."""

    def __init__(self, train_ids: np.ndarray, hashes: np.ndarray, positions: np.ndarray):
        self.train_ids = train_ids
        self.hashes = hashes
        self.positions = positions

    @classmethod
    def open(cls, prepared_dir: Path, train_ids: np.ndarray, fingerprint: int | None = None) -> CopyIndex:
        """Load the cached index, or build and cache it (rebuilt when the data changed or the cache is damaged).

        `fingerprint` is the training ids' checksum from meta.json (None for data prepared before it was recorded).
        """
        path = Path(prepared_dir) / "copy_index.npz"
        made_from = np.array([len(train_ids), -1 if fingerprint is None else fingerprint], dtype=np.int64)
        cached = _read_cache(path, made_from)
        if cached is not None:
            return cls(train_ids, *cached)
        hashes = window_hashes(train_ids)
        order = np.argsort(hashes, kind="stable")
        index = cls(train_ids, hashes[order], order.astype(np.int64))
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, hashes=index.hashes, positions=index.positions, made_from=made_from)
        except Exception:  # noqa: BLE001 - a read-only prepared dir only costs a rebuild next time
            pass
        return index

    def measure(self, sample_ids: list[int]) -> Copying:
        sample = np.asarray(sample_ids, dtype=np.int64)
        hashes = window_hashes(sample)
        if len(hashes) == 0:
            return Copying(0, 0.0, 0)
        left = np.searchsorted(self.hashes, hashes, side="left")
        right = np.searchsorted(self.hashes, hashes, side="right")
        found = right > left
        longest = 0
        for i in np.flatnonzero(found):
            if len(sample) - i <= longest:
                break
            for position in self.positions[left[i] : min(right[i], left[i] + MAX_CANDIDATES)]:
                longest = max(longest, self._match_length(sample[i:], int(position)))
        return Copying(longest if longest >= WINDOW else 0, float(found.mean()), len(hashes))

    def _match_length(self, sample: np.ndarray, position: int) -> int:
        stretch = np.asarray(self.train_ids[position : position + len(sample)], dtype=np.int64)
        mismatch = np.flatnonzero(stretch != sample[: len(stretch)])
        return int(mismatch[0]) if len(mismatch) else len(stretch)


def _read_cache(path: Path, made_from: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(hashes, positions) from the cache if it is whole and was made from these training ids, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as cached:  # zip members carry a CRC-32: changed bytes fail here
            hashes, positions, source = cached["hashes"], cached["positions"], cached["made_from"]
    except Exception:  # noqa: BLE001 - a damaged cache fails in many ways (BadZipFile, KeyError, EOFError, ...)
        return None
    windows = (max(int(made_from[0]) - WINDOW + 1, 0),)
    whole = hashes.dtype == np.uint64 and positions.dtype == np.int64 and hashes.shape == positions.shape == windows
    return (hashes, positions) if whole and np.array_equal(source, made_from) else None


def index_for(model) -> CopyIndex:
    """The copy index of a loaded rnngen.api.Model's training data."""
    from rnngen.data.prepare import load_or_repair

    directory = model.config.prepared_dir()
    prepared = load_or_repair(model.config, "--report-copying")
    if prepared.vocab.tokens != model.vocab.tokens:
        raise UserError(
            f"the prepared data in {directory} no longer matches the checkpoint; --report-copying cannot compare"
        )
    return CopyIndex.open(directory, prepared.ids("train"), prepared.checksum("train"))

"""metrics.csv, a run's log: its columns, its rows, and reading and writing it (one place for each).

Light on purpose (no torch), so `rnngen plot` reads runs without loading the training stack.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rnngen.fileio import write_text

METRICS_COLUMNS = [
    "step", "epoch", "elapsed_s", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpc",
    "lr", "grad_norm", "clip_rate", "tokens_per_s",
]  # fmt: skip


def metrics_row(step, epoch, elapsed_s, tokens, train_loss, scores, lr, grad_norm, clip_rate, tokens_per_s) -> dict:
    """One row of metrics.csv; None (and a tokens_per_s of 0) is written as an empty cell."""
    return {
        "step": step,
        "epoch": round(epoch, 4),
        "elapsed_s": round(elapsed_s, 2),
        "tokens": tokens,
        "train_loss": _fmt(train_loss),
        "val_loss": _fmt(scores.loss if scores else None),
        "val_ppl": _fmt(scores.perplexity if scores else None),
        "val_bpc": _fmt(scores.bpc if scores else None),
        "lr": "" if lr is None else f"{lr:.3g}",
        "grad_norm": _fmt(grad_norm),
        "clip_rate": _fmt(clip_rate),
        "tokens_per_s": round(tokens_per_s) if tokens_per_s else "",
    }


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Write all rows so far (atomically, like every file of a run)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, METRICS_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.csv as dicts of strings; none if the file does not exist yet."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"

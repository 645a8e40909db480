"""metrics.csv, a run's log: its columns, its rows, and reading and writing it (one place for each).

Light on purpose (no torch), so `rnngen plot` reads runs without loading the training stack.

A row is kept only when it is whole: every column present, every value a number (or empty where
the step had none), steps increasing. A damaged file (cut short, bytes changed, lines mixed in)
keeps its whole rows and the reader says how many it dropped, so a plot or a resume never fails
on a log file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rnngen.fileio import write_text

METRICS_COLUMNS = [
    "step", "epoch", "elapsed_s", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpc", "val_bpc_open",
    "lr", "grad_norm", "clip_rate", "tokens_per_s",
]  # fmt: skip
EARLIER_COLUMNS = [c for c in METRICS_COLUMNS if c != "val_bpc_open"]  # runs from before open-vocabulary bpc


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
        "val_bpc_open": _fmt(scores.bpc_open if scores else None),
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


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """(the whole rows of `path` in step order, how many rows were damaged); no file = no rows."""
    if not path.is_file():
        return [], 0
    text = path.read_bytes().decode("utf-8", "replace")
    rows: list[dict] = []
    damaged = 0
    lines = text.splitlines()
    columns = lines[0].split(",") if lines else METRICS_COLUMNS
    if columns not in (METRICS_COLUMNS, EARLIER_COLUMNS):
        return [], len(lines)
    for line in lines[1:]:
        row = _parse(line, columns)
        if row is None or (rows and int(row["step"]) <= int(rows[-1]["step"])):
            damaged += 1
        else:
            rows.append(row)
    return rows, damaged


def _parse(line: str, columns: list[str]) -> dict | None:
    """One line as a row dict (every column of METRICS_COLUMNS; empty where `columns` lacks one), or None when it
    is not a whole row."""
    try:
        (values,) = list(csv.reader(io.StringIO(line)))
    except (csv.Error, ValueError):
        return None
    if len(values) != len(columns) or not values[0].isdigit():
        return None
    try:
        [float(value) for value in values[1:] if value]  # nan and inf are fine: a diverged step logs them
    except ValueError:
        return None
    return {column: "" for column in METRICS_COLUMNS} | dict(zip(columns, values))

"""metrics.csv: one row per log or evaluation step of a run; training writes it, `--resume` and `plot` read it.

A row is kept only when it is whole: every column present, every value a number (or empty where
the step had none), steps increasing. A damaged file (cut short, bytes changed, lines mixed in)
keeps its whole rows and the reader says how many it dropped, so a plot or a resume never fails
on a log file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

METRICS_COLUMNS = [
    "step", "epoch", "elapsed_s", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpc",
    "lr", "grad_norm", "clip_rate", "tokens_per_s",
]  # fmt: skip


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """(the whole rows of `path` in step order, how many rows were damaged); no file = no rows."""
    if not path.is_file():
        return [], 0
    text = path.read_bytes().decode("utf-8", "replace")
    rows: list[dict] = []
    damaged = 0
    lines = text.splitlines()
    if lines and lines[0].split(",") != METRICS_COLUMNS:
        return [], len(lines)
    for line in lines[1:]:
        row = _parse(line)
        if row is None or (rows and int(row["step"]) <= int(rows[-1]["step"])):
            damaged += 1
        else:
            rows.append(row)
    return rows, damaged


def _parse(line: str) -> dict | None:
    """One line as a row dict, or None when it is not a whole row."""
    try:
        (values,) = list(csv.reader(io.StringIO(line)))
    except (csv.Error, ValueError):
        return None
    if len(values) != len(METRICS_COLUMNS) or not values[0].isdigit():
        return None
    try:
        [float(value) for value in values[1:] if value]  # nan and inf are fine: a diverged step logs them
    except ValueError:
        return None
    return dict(zip(METRICS_COLUMNS, values))

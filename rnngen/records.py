"""What a training run writes, one way for every model: the run directory, metrics rows,
evaluation samples and the contents of its checkpoints.

The neural trainer (rnngen.train) and the n-gram counter (rnngen.ngram_train) both write through
these functions, so a run directory looks the same whichever model made it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rnngen import checkpoint
from rnngen import config as config_module
from rnngen.config import Config
from rnngen.errors import UserError
from rnngen.fileio import write_text
from rnngen.runs import RunPaths, mark_latest
from rnngen.sample import DecodeOptions, encode_seed, generate, seed_text

METRICS_COLUMNS = [
    "step", "epoch", "elapsed_s", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpc",
    "lr", "grad_norm", "clip_rate", "tokens_per_s",
]  # fmt: skip


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    reason: str
    best_val_loss: float
    last_val: dict | None = None
    interrupted: bool = False
    notes: list = field(default_factory=list)


def start_run(config: Config, paths: RunPaths) -> None:
    """Create the run directory, save the resolved config in it and point runs/LATEST at it."""
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, config_module.to_yaml(config))
    mark_latest(paths.root)


# --------------------------------------------------------------------------- metrics.csv


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


# --------------------------------------------------------------------------- samples and checkpoints


def write_sample(model, vocab, config: Config, paths: RunPaths, step: int, device: torch.device) -> None:
    """samples/step-NNNNNNN.txt: train.sample_length tokens from the sample: seed, drawn with random seed `step`."""
    if config.train.sample_length == 0:
        return
    sample_config = config.sample
    try:
        seed_ids = encode_seed(vocab, sample_config.seed, "skip")
    except UserError:
        seed_ids = encode_seed(vocab, None)
    options = DecodeOptions.from_config(sample_config)
    options.length, options.num_samples, options.stop = config.train.sample_length, 1, ()
    options.random_seed = step  # its own generator: training's random stream is untouched
    (sample,) = generate(model, vocab, seed_ids, options, device)
    text = (seed_text(vocab, seed_ids) if sample_config.seed else "") + sample.text
    write_text(paths.samples / f"step-{step:07d}.txt", text + "\n")


def checkpoint_payload(config: Config, model_args: dict, model, vocab, summary: dict, **extra) -> dict:
    """What every checkpoint holds: config, model arguments and state, vocabulary and summary (plus `extra`)."""
    return {
        checkpoint.CONFIG: config.to_dict(),
        checkpoint.MODEL_ARGS: model_args,
        checkpoint.MODEL_STATE: model.state_dict(),
        checkpoint.VOCAB: vocab.to_dict(),
        checkpoint.SUMMARY: summary,
        **extra,
    }

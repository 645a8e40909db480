"""`rnngen compare`: Markov models (n-gram and hidden) against recurrent ones on the same text, in one table.

Every model is trained by rnngen.training.trainer.train on the same prepared data (the neural ones at one
shared size and time budget) and measured the same way through rnngen.api: validation loss,
perplexity and bits per character on the whole validation split in one pass, sampling speed,
and a one-line sample; with the cost of a token (multiply-adds) and the seconds per epoch. The
table shows the trade-off: an n-gram model is built in seconds but stores more n-grams with every
token of context, an HMM pays K^2 per token for K states of memory, while a recurrent model keeps
a fixed-size memory and, given minutes of training, predicts better.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from rnngen import api, console
from rnngen.config import HMM_DEFAULTS, HMM_MAX_STATES, Config, without_recurrent_only
from rnngen.data.prepare import Prepared, prepare
from rnngen.errors import UserError
from rnngen.models.ngram import state_bytes
from rnngen.models.registry import count_parameters
from rnngen.runs import RunPaths, resolve_checkpoint
from rnngen.training.trainer import train

DEFAULT_SPECS = ("ngram:2", "ngram:3", "ngram:5", "rnn", "lstm", "gru")
DEFAULT_BUDGET_MINUTES = 5.0
NEURAL_CELLS = ("rnn", "lstm", "gru")
MARKOV_CELLS = ("ngram", "hmm")
SAMPLE_TOKENS = 200  # generated to time sampling; the table shows the start of it
SAMPLE_CHARS = 60
COLUMNS = [
    "model", "parameters", "ngrams", "memory_mb", "train_s", "epoch_s", "cost_per_token", "val_loss", "perplexity",
    "bpc", "bpc_open", "sample_tokens_per_s", "sample", "checkpoint",
]  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One model of the comparison: a cell to train (with an order for ngram, states for hmm), or a checkpoint."""

    name: str
    cell: str | None = None
    order: int | None = None
    states: int | None = None
    checkpoint: Path | None = None


def parse_specs(items) -> list[Spec]:
    """`--models` values, each one or several comma-separated SPECs: rnn, lstm, gru, ngram:N, hmm:K, or a checkpoint/run path."""
    specs = [parse_spec(part.strip()) for item in items for part in item.split(",") if part.strip()]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--models names {', '.join(repeated)} more than once; give each model once")
    return specs


def parse_spec(text: str) -> Spec:
    path = Path(text)
    if path.is_file() or (path.is_dir() and RunPaths(path).checkpoint() is not None):
        return Spec(name=text, checkpoint=path)
    if text in NEURAL_CELLS:
        return Spec(name=text, cell=text)
    match = re.fullmatch(r"ngram:(\d+)", text)
    if match and 1 <= int(match.group(1)) <= 16:
        order = int(match.group(1))
        return Spec(name=f"ngram-{order}", cell="ngram", order=order)
    match = re.fullmatch(r"hmm:(\d+)", text)
    if match and 1 <= int(match.group(1)) <= HMM_MAX_STATES:
        states = int(match.group(1))
        return Spec(name=f"hmm-{states}", cell="hmm", states=states)
    raise UserError(
        f"--models {text!r}: not a model; use rnn, lstm, gru, ngram:N (N from 1 to 16), "
        f"hmm:K (K hidden states, 1 to {HMM_MAX_STATES:,}), or the path of a checkpoint or run directory"
    )


# --------------------------------------------------------------------------- running


def compare(config: Config, specs: list[Spec], budget_minutes: float | None = None) -> list[dict]:
    """Train (or load) every model on the config's prepared data and measure it; one row per model."""
    budget = budget_minutes or config.train.max_minutes or DEFAULT_BUDGET_MINUTES
    shared_data = dataclasses.replace(config.data, prepared_dir=str(config.prepared_dir()))
    # the models compare trains start from scratch; a fine-tuned run takes part as a checkpoint spec
    config = config.replace(data=shared_data, train=dataclasses.replace(config.train, init_from=None))
    prepared = prepare(config)
    root = Path(config.train.out_dir) / "compare"
    rows = []
    for number, spec in enumerate(specs, 1):
        if spec.checkpoint is not None:
            path = resolve_checkpoint(run=spec.checkpoint)
            console.info(f"compare {number}/{len(specs)}: {spec.name} from {path}")
        else:
            path = _train(config, spec, budget, root / spec.name, f"{number}/{len(specs)}")
        rows.append(measure(spec.name, path, prepared, config))
    return rows


def _train(config: Config, spec: Spec, budget: float, out_dir: Path, progress: str) -> Path:
    """Train one model of the comparison into out_dir (replacing an earlier comparison's run there)."""
    orders = {"order": spec.order or config.model.order, "hmm_states": spec.states or config.model.hmm_states}
    model = dataclasses.replace(config.model, cell=spec.cell, **orders)
    limits = dataclasses.replace(config.train, out_dir=str(out_dir), max_minutes=budget)
    how = "counting n-grams" if spec.cell == "ngram" else f"training for up to {budget:g} min"
    console.info(f"compare {progress}: {spec.name}, {how} -> {out_dir}")
    if spec.cell == "hmm":  # the config's optimizer settings are the recurrent networks'; an HMM needs its own
        limits = dataclasses.replace(limits, **HMM_DEFAULTS)
    run_config = config.replace(model=model, train=limits)
    if spec.cell in MARKOV_CELLS:  # a cache, spelling or AR/TAR of the config act on parts these have not got
        run_config = without_recurrent_only(run_config)
    result = train(run_config, overwrite=True)
    if result.interrupted:
        raise KeyboardInterrupt
    return resolve_checkpoint(run=result.run_dir)


def measure(name: str, path: Path, prepared: Prepared, config: Config) -> dict:
    """One table row: size, memory, training time, validation scores, sampling speed and a sample."""
    model = api.load(path, config.train.device)
    scores = _score(model, prepared)
    ngram = model.model_args.get("cell") == "ngram"
    sample, tokens_per_s = _timed_sample(model, config)
    summary = model.summary
    return {
        "model": name,
        "parameters": None if ngram else count_parameters(model.module),
        "ngrams": model.module.stored_ngrams if ngram else None,
        "memory_mb": state_bytes(model.module) / 1e6,
        "train_s": summary.get("elapsed_s"),
        "epoch_s": _epoch_seconds(summary),
        "cost_per_token": model.module.cost_per_token(),
        "val_loss": scores.loss,
        "perplexity": scores.perplexity,
        "bpc": scores.bpc,
        "bpc_open": scores.bpc_open,
        "sample_tokens_per_s": tokens_per_s,
        "sample": sample,
        "checkpoint": str(path),
    }


def _epoch_seconds(summary: dict) -> float | None:
    """Training seconds per pass over the training text: time / (tokens seen / training tokens); an n-gram
    model's one counting pass is its epoch."""
    train_tokens = (summary.get("prepared") or {}).get("train_tokens")
    if not (summary.get("tokens") and train_tokens and summary.get("elapsed_s") is not None):
        return None
    return summary["elapsed_s"] / (summary["tokens"] / train_tokens)


def _score(model: api.Model, prepared: Prepared):
    """Scores on the comparison's validation split: its ids when the vocabulary matches, else its text."""
    ids = prepared.ids("val")
    if model.vocab.tokens == prepared.vocab.tokens:
        return model.evaluate_ids(ids, prepared.val_chars, prepared.unknown_words()["val_counts"])
    console.warn(f"{model.path} has another vocabulary; scoring it on the validation text re-tokenized")
    return model.evaluate(prepared.vocab.join(prepared.vocab.decode(ids)))


def _timed_sample(model: api.Model, config: Config) -> tuple[str, float]:
    """Generate SAMPLE_TOKENS with the config's sampling settings: the text as one line, and tokens per second."""
    s = config.sample
    options = {"length": SAMPLE_TOKENS, "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
               "num_samples": 1, "random_seed": s.random_seed or 0, "stop": (), "max_time": None}  # fmt: skip
    started = time.perf_counter()
    try:
        (sample,) = model.sample(s.seed, "skip", **options)
    except UserError:  # no token of the seed is in this vocabulary: start as at a new line
        started = time.perf_counter()
        (sample,) = model.sample("", **options)
    elapsed = time.perf_counter() - started
    return sample.seed + sample.text, sample.tokens / max(elapsed, 1e-9)


# --------------------------------------------------------------------------- the table


def render(rows: list[dict], output_format: str = "markdown") -> str:
    if output_format == "json":
        return json.dumps([{k: _finite(row[k]) for k in COLUMNS} for row in rows], indent=2, ensure_ascii=False) + "\n"
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_value(row[k]) for k in COLUMNS} for row in rows)
        return buffer.getvalue()
    return _markdown(rows)


def _markdown(rows: list[dict]) -> str:
    header = ["model", "size", "memory (MB)", "train time (s)", "s/epoch", "cost/token", "val loss", "perplexity",
              "bits/char", "bits/char open", "sample tok/s", "sample"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 10 + ["---"]) + "|"]
    for row in rows:
        neural = row["parameters"] is not None
        size = f"{_short(row['parameters'])} params" if neural else f"{_short(row['ngrams'])} n-grams"
        cells = [
            row["model"], size, f"{row['memory_mb']:.2f}", _number(row["train_s"], ".1f"), _number(row["epoch_s"], ".1f"),
            _short(row["cost_per_token"]), f"{row['val_loss']:.4f}", f"{row['perplexity']:.2f}", f"{row['bpc']:.3f}",
            f"{row['bpc_open']:.3f}", f"{row['sample_tokens_per_s']:,.0f}",
            "`" + one_line(row["sample"]).replace("`", "'") + "`",
        ]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def one_line(text: str, limit: int = SAMPLE_CHARS) -> str:
    """The start of a sample on one line: line breaks shown as ' / ', whitespace runs squeezed."""
    flat = re.sub(r"[ \t]+", " ", text.replace("\r", "").replace("\n", " / ")).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _short(count: int) -> str:
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    if count >= 1e3:
        return f"{count / 1e3:.1f}k"
    return str(count)


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _finite(value):
    """JSON has no infinity: an unbounded perplexity is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return one_line(value, limit=10_000)
    return value

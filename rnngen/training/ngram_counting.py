"""`rnngen train` for cell ngram: count the training text once and write the run as a neural run does."""

from __future__ import annotations

import time

import torch

from rnngen import checkpoint, console
from rnngen.config import Config
from rnngen.data.prepare import prepare
from rnngen.errors import DataError
from rnngen.generate.evaluate import evaluate_stream
from rnngen.metrics import metrics_row, write_metrics
from rnngen.models.ngram import NgramLM, ngram_args, state_bytes
from rnngen.runs import RunPaths
from rnngen.training.run_files import TrainResult, ValidationSplit, checkpoint_payload, start_run, write_sample


def train_ngram(config: Config, paths: RunPaths) -> TrainResult:
    """Count the training text once and write the run exactly as a neural run does (config, best/last.pt, metrics)."""
    t = config.train
    if t.threads:
        torch.set_num_threads(t.threads)
    prepared = prepare(config)
    train_ids, val = prepared.ids("train"), ValidationSplit.of(prepared)
    if len(train_ids) < 1:
        raise DataError("the training split is empty; lower data.val_fraction or give more text")
    start_run(config, paths)
    vocab = prepared.vocab
    order = config.model.order
    console.info(f"counting n-grams of order 1-{order} over {len(train_ids):,} tokens -> {paths.root}")
    started = time.monotonic()
    model = NgramLM.fit(train_ids, len(vocab), order)
    build_s = time.monotonic() - started
    console.info(f"stored {model.stored_ngrams:,} n-grams ({state_bytes(model) / 1e6:.1f} MB) in {build_s:.1f}s")
    scores = evaluate_stream(model, val.ids, val.chars, t.eval_batch_size, torch.device("cpu"), unk_bits=val.unk_bits)
    console.info(
        f"validation loss {scores.loss:.4f} (ppl {scores.perplexity:.2f}, bpc {scores.bpc:.4f}, "
        f"open-vocabulary {scores.bpc_open:.4f})"
    )
    write_sample(model, vocab, config, paths, 1, torch.device("cpu"))
    tokens_per_s = len(train_ids) / max(build_s, 1e-9)
    row = metrics_row(1, 1, build_s, len(train_ids), None, scores, None, None, None, tokens_per_s)
    write_metrics(paths.metrics, [row])
    args = ngram_args(len(vocab), order, [len(getattr(model, f"keys_{level}")) for level in range(1, order + 1)])
    summary = {
        "step": 1,
        "epoch": 1,
        "tokens": len(train_ids),
        "elapsed_s": build_s,
        "train_loss": None,
        "val": scores.to_dict(),
        "best_val_loss": scores.loss,
        "parameters": 0,
        "stored_ngrams": model.stored_ngrams,
        "prepared": prepared.meta["counts"],
    }
    payload = checkpoint_payload(config, args, model.state_dict(), vocab, summary, **{checkpoint.SPELLER: val.speller})
    checkpoint.save(paths.best, payload)
    checkpoint.save(paths.last, payload)
    return TrainResult(paths.root, 1, "counted the training text", scores.loss, scores.to_dict())

"""Start a run from a trained model: fine-tuning on new text, with a grown vocabulary and frozen parts.

A run with train.init_from takes the source checkpoint's architecture (its model settings) and
weights. Its data, schedule, optimizer and stop rules come from its own config; the optimizer
state, step counter, schedule and random state start fresh. The source file is only read.

The vocabulary grows in rnngen.data.prepare: tokens of the new text that the source lacks are appended,
so every existing token keeps its id and its rows. The n new rows start where the source model
already placed those tokens:

  - full softmax output: every new token gets <unk>'s output row, and <unk>'s bias minus ln(n).
    Old tokens keep their logits exactly, and the n new tokens together take p / (1 + p) of the
    probability, where p is the source model's p(<unk> | context): what the source gave to "a
    token I do not know", shared evenly. Every old token's probability is scaled by 1 / (1 + p),
    so old tokens keep their relative odds exactly.
  - adaptive softmax output: the new tokens join the last tail cluster, each with that cluster's
    last (rarest) row and its bias minus ln(n); with tied tails that row is the rarest token's
    embedding row, so the new tokens also read in as that token. The head and the other clusters
    are unchanged; in the last cluster old tokens keep their scores, and the new ones together
    take q / (1 + q) of the cluster's share, q = the source's probability of the rarest token
    within the cluster.
  - input: the mean of the existing embedding rows plus small noise (EMBED_NOISE times the rows'
    standard deviation), so new tokens read in as an average token and differ from each other;
    one-hot models grow their first layer's input columns the same way. With tied weights and a
    full softmax the shared row is the output row above: the new tokens read in as <unk>, which is
    how the source model read them.

Freezing (train.freeze) turns off the gradients of named parts: embedding, rnn (every layer),
rnn.N (layer N, from 0) and output. A frozen tensor gets no gradient, so neither the update nor
the weight decay touches it: it ends training bit for bit as it started.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from rnngen import checkpoint, console
from rnngen import config as config_module
from rnngen.config import Config
from rnngen.data.vocab import UNK_ID, Vocab
from rnngen.errors import UserError
from rnngen.models import hmm
from rnngen.models.registry import describe
from rnngen.runs import source_checkpoint

EMBED_NOISE = 0.1  # new embedding rows: the mean row plus noise of this times the rows' standard deviation
SHOWN_TOKENS = 8  # new tokens listed when a fine-tuning run starts


# --------------------------------------------------------------------------- config


def load_source(config: Config) -> tuple[Config, dict]:
    """Read train.init_from's checkpoint (the only time a fine-tuning run reads it), and the config the run
    trains with: the source's model settings and the source's resolved path. The checkpoint goes on to
    prepare (its vocabulary) and the trainer (its weights)."""
    path = source_checkpoint(config.train.init_from, "train.init_from")
    if path.resolve().parent == Path(config.train.out_dir).resolve():
        raise UserError(
            f"train.init_from: {path} is in this run's own directory, which the new run writes over; "
            "set train.out_dir to a new directory"
        )
    source = checkpoint.load(path)
    source_config = config_module.from_dict(source[checkpoint.CONFIG], origin=str(path))
    if source_config.model.cell == "ngram":
        raise UserError(
            f"train.init_from: {path} is an n-gram model, which has no weights to start from; its counts are "
            "rebuilt in seconds, so train an n-gram model on the new text (or both texts) instead"
        )
    report_ignored("model", config.model, source_config.model, "--init-from keeps the source checkpoint's")
    config = config.replace(model=source_config.model, train=dataclasses.replace(config.train, init_from=str(path)))
    return config, source


def report_ignored(section: str, ours, theirs, why: str) -> None:
    """Warn about the keys of a config section that differ from the ones kept (e.g. a checkpoint's)."""
    changed = [k for k in vars(ours) if getattr(ours, k) != getattr(theirs, k)]
    if changed:
        console.warn(f"{why} {section} settings; ignoring changes to {', '.join(changed)}")


# --------------------------------------------------------------------------- weights


def model_args_for(source: dict, vocab: Vocab, path) -> dict:
    """The source's model_args for the (grown) vocabulary; freezing is train.freeze's job from here on."""
    old = source[checkpoint.VOCAB]["tokens"]
    if vocab.tokens[: len(old)] != old:
        raise UserError(
            f"data.vocab_from: its vocabulary does not start with the vocabulary of train.init_from ({path}), "
            "so the source's rows cannot be kept; use the same checkpoint for both, or drop data.vocab_from"
        )
    args = source[checkpoint.MODEL_ARGS]
    if args.get("spelling") and len(vocab) > len(old):
        raise UserError(
            f"train.init_from: {path} shares embedding rows by spelling (model.spelling), and its vocabulary cannot "
            f"grow yet ({len(vocab) - len(old):,} new words); set data.vocab_from to the same checkpoint so the "
            "new text is read with the source's vocabulary"
        )
    return {**args, "vocab_size": len(vocab), **({"freeze_embedding": False} if "freeze_embedding" in args else {})}


def grown_state(source: dict, args: dict, seed: int) -> dict:
    """The source's weights with rows for the new tokens (see the module docstring); the source is not changed."""
    state = dict(source[checkpoint.MODEL_STATE])
    added = args["vocab_size"] - source[checkpoint.MODEL_ARGS]["vocab_size"]
    if added == 0:
        return state
    if args["cell"] == "hmm":
        return hmm.grown_state(state, added)
    generator = torch.Generator().manual_seed(seed)
    tied_full = args["tie_weights"] and args["output"] == "full"
    tied_tails = args.get("tied_tails", False)
    if args["input"] == "onehot":  # the input columns of the first layer's weights
        columns = state["rnn.weight_ih_l0"]
        state["rnn.weight_ih_l0"] = torch.cat([columns, _mean_plus_noise(columns.T, added, generator).T], dim=1)
    elif not (tied_full or tied_tails):
        table = state["embedding.weight"]
        state["embedding.weight"] = torch.cat([table, _mean_plus_noise(table, added, generator)])
    if tied_tails:  # new ids are the highest: they fall in the last tail cluster, scored by embedding rows
        _append_copies(state, "embedding.weight", "head.tail_bias", -1, added)
    elif args["output"] == "adaptive":
        last = len(args["cutoffs"]) - 1
        prefix = f"head.tails.{last}.1."
        _append_copies(state, prefix + "weight", prefix + "bias", -1, added)
    else:
        _append_copies(state, "head.weight", "head.bias", UNK_ID, added)
        if tied_full:
            state["embedding.weight"] = state["head.weight"]
    if args["tie_weights"] and args["output"] == "adaptive":  # the head's rows are the (grown) embedding table
        state["head.word_weight"] = state["embedding.weight"]
    return state


def _mean_plus_noise(rows: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` new rows: the mean of `rows` (N, D) plus Gaussian noise scaled to their spread."""
    noise = torch.randn(count, rows.size(1), generator=generator) * (EMBED_NOISE * rows.float().std().item())
    return (rows.float().mean(0, keepdim=True) + noise).to(rows.dtype)


def _append_copies(state: dict, weight_key: str, bias_key: str, row: int, count: int) -> None:
    """Append `count` copies of output row `row`, with its bias lowered by ln(count) so that together they
    score as that one token did."""
    weight, bias = state[weight_key], state[bias_key]
    state[weight_key] = torch.cat([weight, weight[row].expand(count, -1)])
    state[bias_key] = torch.cat([bias, (bias[row] - math.log(count)).expand(count)])


# --------------------------------------------------------------------------- freezing


def freeze(model: torch.nn.Module, names) -> list[str]:
    """Turn off the gradients of the named parts; returns one description per part."""
    described = []
    for name in names:
        params = _part(model, name)
        for p in params:
            p.requires_grad_(False)
        described.append(f"{name} ({sum(p.numel() for p in params):,} parameters)")
    return described


def _part(model: torch.nn.Module, name: str) -> list[torch.nn.Parameter]:
    if name == "embedding":
        params = list(model.embedding.parameters())
        if not params:
            raise UserError("train.freeze: embedding, but model.input is onehot (no embedding table); freeze rnn.0")
        return params
    if name == "output":
        return list(model.head.parameters())
    if name == "rnn":
        return list(model.rnn.parameters())
    layer = int(name.split(".")[1])  # rnn.N (the config checked the form)
    if layer >= model.num_layers:
        raise UserError(
            f"train.freeze: {name}, but the model has {model.num_layers} recurrent layer(s), "
            f"rnn.0 to rnn.{model.num_layers - 1}"
        )
    return [p for n, p in model.rnn.named_parameters() if n.endswith(f"_l{layer}")]


# --------------------------------------------------------------------------- what the user sees


def describe_start(source: dict, path, vocab: Vocab, train_config) -> str:
    """What a fine-tuning run took from its source, what it reset, and how its vocabulary grew."""
    args, summary = source[checkpoint.MODEL_ARGS], source.get(checkpoint.SUMMARY, {})
    old = len(source[checkpoint.VOCAB]["tokens"])
    new_tokens = vocab.tokens[old:]
    shown = ", ".join(repr(t) for t in new_tokens[:SHOWN_TOKENS]) + (", ..." if len(new_tokens) > SHOWN_TOKENS else "")
    growth = f"+{len(new_tokens):,} tokens: {shown}" if new_tokens else "+0 tokens"
    step = summary.get("step")
    return (
        f"fine-tuning from {path}{f' (step {step:,})' if step is not None else ''}: "
        f"{describe(args)}, vocabulary {old:,} -> {len(vocab):,} ({growth})\n"
        f"kept: the source's weights, architecture and tokenizer ({vocab.level} level); reset: optimizer state, "
        f"step counter, learning-rate schedule, random state; peak lr {train_config.lr:g} after "
        f"{train_config.warmup_steps} warmup steps"
    )


def record(source: dict, path, vocab: Vocab) -> dict:
    """What a fine-tuned checkpoint remembers of its source (shown by `rnngen info`)."""
    old = len(source[checkpoint.VOCAB]["tokens"])
    return {
        "checkpoint": str(path),
        "step": source.get(checkpoint.SUMMARY, {}).get("step"),
        "added_tokens": len(vocab) - old,
    }

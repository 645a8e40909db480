"""A continuous cache pointer (Grave, Joulin & Usunier, 2017): words that came recently, after a
state like the present one, get part of the probability.

The network's top-layer output h_t (the vector the output layer scores) serves as a key. The
cache holds the last `size` pairs (h_i, w_{i+1}): an output and the token that came after it.
Predicting the next token from h_t:

    p_cache(w) = sum_i [w_{i+1} = w] softmax_i(theta * h_t . h_i)
    p(w)       = (1 - lambda) p_model(w) + lambda p_cache(w)

The names and topic words of a novel come back within a few hundred words; the softmax over the
whole vocabulary can only learn how likely a name is on average, the cache knows it was just
said. Nothing is trained: scoring (evaluation, validation) uses the cache with the network as
trained. While the cache is empty, p = p_model. Each row of a batch (a stream of text) has its
own cache.

Sampling does not use it: drawn from, the mixture gave measurably worse text (docs/word-level.md).
It hedges every prediction with recent tokens, which lowers the loss of text that exists, but a
sample then draws a recent token in place of the right one about lambda of the time.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

EMPTY = -1  # the token of an unused cache slot


@dataclass(frozen=True)
class Pointer:
    """model.cache_size, model.cache_theta and model.cache_lambda, as a model holds them."""

    size: int
    theta: float
    lam: float


def model_args(model_config) -> dict:
    """The cache settings for a checkpoint's model_args: none when it is off, so old checkpoints match."""
    m = model_config
    if not m.cache_size:
        return {}
    return {"pointer": {"size": m.cache_size, "theta": m.cache_theta, "lam": m.cache_lambda}}


def pointer_of(model) -> Pointer | None:
    return getattr(model, "pointer", None)


@contextlib.contextmanager
def disabled(model):
    """The model without its cache for a while (to measure what the cache gives)."""
    pointer = pointer_of(model)
    if pointer is None:
        yield
        return
    model.pointer = None
    try:
        yield
    finally:
        model.pointer = pointer


@dataclass
class Memory:
    """The cache of every row: keys (B, M, H) and the token after each key (B, M; EMPTY where unused)."""

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def empty(cls, rows: int, pointer: Pointer, hidden_size: int, like: torch.Tensor) -> Memory:
        keys = like.new_zeros(rows, pointer.size, hidden_size)
        return cls(keys, torch.full((rows, pointer.size), EMPTY, dtype=torch.long, device=like.device))

    def rows(self, rows) -> Memory:
        return Memory(self.keys[rows], self.values[rows])


def new_memory(model, rows: int) -> Memory | None:
    """An empty cache for `rows` streams of the model, or None when the model has no cache."""
    pointer = pointer_of(model)
    return None if pointer is None else Memory.empty(rows, pointer, model.hidden_size, model.rnn.weight_hh_l0)


# --------------------------------------------------------------------------- the maths


def _attention(queries: torch.Tensor, keys: torch.Tensor, visible: torch.Tensor, theta: float) -> torch.Tensor:
    """softmax over the visible keys of theta * q . k: (B, T, H) x (B, K, H) -> (B, T, K); zeros where none is visible."""
    scores = theta * torch.einsum("bth,bkh->btk", queries, keys)
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return weights.nan_to_num(0.0)  # a row with nothing visible: 0/0


def _mix(model_logprobs: torch.Tensor, cache_probs: torch.Tensor, lam: float, used: torch.Tensor) -> torch.Tensor:
    """log((1 - lam) p_model + lam p_cache) where the cache has something (`used`), else log p_model."""
    mixed = torch.logaddexp(model_logprobs + math.log1p(-lam), cache_probs.log() + math.log(lam))
    return torch.where(used, mixed, model_logprobs)


def target_logprobs(
    pointer: Pointer, memory: Memory, logprobs: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, Memory]:
    """Scoring a window: log p of each target (B, T) with the cache, and the memory after the window.

    logprobs: the network's log p of the targets (B, T); hidden: its outputs (B, T, H). Step t sees
    the memory and the window's own steps before t, the last pointer.size pairs of them.
    """
    size, steps = memory.values.size(1), targets.size(1)
    keys = torch.cat([memory.keys, hidden], dim=1)  # (B, M+T, H)
    values = torch.cat([memory.values, targets], dim=1)  # (B, M+T)
    slot = torch.arange(size + steps, device=targets.device)
    step = torch.arange(steps, device=targets.device)[:, None]
    window = (slot >= step) & (slot < step + size)  # (T, M+T): the `size` pairs before step t
    visible = window & (values[:, None, :] != EMPTY)  # (B, T, M+T)
    weights = _attention(hidden, keys, visible, pointer.theta)
    cache_probs = (weights * (values[:, None, :] == targets[:, :, None])).sum(-1)  # (B, T)
    mixed = _mix(logprobs, cache_probs, pointer.lam, visible.any(-1))
    return mixed, Memory(keys[:, -size:], values[:, -size:])


# --------------------------------------------------------------------------- with a model


def score_window(model, inputs, targets, state, memory: Memory):
    """Total -log p (nats) of a window's targets with the cache; the new state and memory."""
    nll, (outputs, _), state = model.loss_and_outputs(inputs, targets, state, reduction="none")
    logprobs, memory = target_logprobs(model.pointer, memory, -nll.view(targets.shape), outputs, targets)
    return -logprobs.sum(), state, memory

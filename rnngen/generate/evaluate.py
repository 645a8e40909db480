"""Loss, perplexity and bits per character of a model over a token stream.

The hidden state runs through the text in order, as in training: the stream is folded into
parallel rows, each row is read window by window with its state carried, and a leftover tail
continues the last row. Every token after the first is predicted exactly once. A model with a
cache pointer (rnngen.models.cache) scores with it, one cache per row, carried like the state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rnngen.data.windows import EVAL_WINDOW, evaluation_blocks, to_tensor
from rnngen.models import cache
from rnngen.models.state import detach_state, select_streams


@dataclass
class Scores:
    loss: float  # mean nats per predicted token
    perplexity: float
    bpc: float  # total bits over the characters of the predicted text
    tokens: int  # predicted tokens
    chars: int
    bpc_open: float | None = None  # bpc with every <unk> also paying for its spelling (rnngen.models.speller)

    def to_dict(self) -> dict:
        return asdict(self)


def scores_from(total_nats: float, tokens: int, chars: int, unk_bits: float = 0.0) -> Scores:
    """Scores of `total_nats` over `tokens` predictions and `chars` characters; `unk_bits`: the spelling bits of
    the <unk> tokens among them (0 where there are none, and then bpc_open == bpc)."""
    loss = total_nats / max(tokens, 1)
    bits = total_nats / math.log(2)
    return Scores(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bpc=bits / max(chars, 1),
        tokens=tokens,
        chars=chars,
        bpc_open=(bits + unk_bits) / max(chars, 1),
    )


@torch.no_grad()
def total_loss(
    model, ids: np.ndarray, batch_size: int, device: torch.device, group=None, window: int = EVAL_WINDOW
) -> tuple[float, int]:
    """Sum of -ln p(next token) over the stream, and the number of predictions.

    Under DDP the stream is folded into batch_size rows per rank; each rank reads its own block of
    rows (the last rank also the tail) and the sums are added over ranks.
    """
    rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
    was_training = model.training
    model.eval()
    inputs, targets, tail = evaluation_blocks(ids, batch_size * world)
    if world > 1:
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        inputs, targets = inputs[rows], targets[rows]
        tail = tail if rank == world - 1 else None
    total, state, memory = 0.0, None, cache.new_memory(model, inputs.shape[0])
    for start in range(0, inputs.shape[1], window):
        x = to_tensor(inputs[:, start : start + window], device)
        y = to_tensor(targets[:, start : start + window], device)
        loss, state, memory = _score(model, x, y, state, memory)
        total += loss.item()
        state = detach_state(state)
    count = inputs.size
    if tail is not None:
        state = select_streams(state, slice(-1, None)) if state is not None else None
        memory = memory.rows(slice(-1, None)) if memory is not None else None
        tail_loss, _, _ = _score(model, to_tensor(tail[0], device), to_tensor(tail[1], device), state, memory)
        total += tail_loss.item()
        count += tail[0].size
    model.train(was_training)
    if world > 1:
        from rnngen.distributed import sum_over_ranks

        total, count = sum_over_ranks(group, [total, float(count)], device)
    return total, int(count)


def _score(model, inputs, targets, state, memory):
    """Summed nats of one window, the new state, and the new cache memory (None without a cache)."""
    if memory is not None:
        return cache.score_window(model, inputs, targets, state, memory)
    loss, state = model.loss(inputs, targets, state, reduction="sum")
    return loss, state, None


def evaluate_stream(model, ids: np.ndarray, chars: int, batch_size: int, device, group=None, unk_bits=0.0) -> Scores:
    """Scores of the model over a token stream; `unk_bits`: the spelling bits of its <unk> targets."""
    total, count = total_loss(model, ids, batch_size, device, group)
    return scores_from(total, count, chars, unk_bits)

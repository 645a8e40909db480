"""Cut a token stream into parallel streams and BPTT windows.

The stream of N token ids is folded into `batch_size` rows (streams) that are read side by side;
the targets are the same ids shifted by one. With batch_size 4 and seq_len 3:

    ids:      a b c d e f g h i j k l m n o p q r s t u v w x y
    inputs:   row 0: a b c d e f      targets: b c d e f g
              row 1: g h i j k l               h i j k l m
              row 2: m n o p q r               n o p q r s
              row 3: s t u v w x               t u v w x y
    window 0 = columns 0-2 (a b c / g h i / ...), window 1 = columns 3-5, ...

Row r of window k+1 continues exactly where row r of window k stopped, so the hidden state can
be carried from window to window (stateful truncated BPTT). The ids stay memory-mapped: a window
reads only its own (B, T) slice from disk. Under DDP the streams are split between ranks, each
rank taking a contiguous block of rows.

Every window length is decided here:
  - training: train.seq_len steps; with train.variable_bptt (AWD-LSTM) each step's length is
    seq_len with probability 0.95, else seq_len/2, then drawn from a normal with std 5 around it
    (at least 5), and the learning rate is scaled by length / seq_len so every token weighs the same;
  - evaluation: EVAL_WINDOW steps, whatever the training length. The state is carried from window
    to window, so the score does not depend on the length; longer windows are fewer calls.
"""

from __future__ import annotations

import numpy as np
import torch

from rnngen.errors import DataError

EVAL_WINDOW = 256  # steps per evaluation window: the (B, T, V) scores of one window are held at once
MIN_BPTT = 5  # the shortest variable-length window


class TokenStreams:
    """Training windows of shape (B, T) over memory-mapped token ids."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1):
        rows = batch_size * world_size
        length = (len(ids) - 1) // rows  # columns per stream
        self.seq_len = seq_len
        self.windows = length // seq_len
        if self.windows < 1:
            raise DataError(
                f"the training text ({len(ids):,} tokens) is shorter than one training window "
                f"(batch_size {batch_size} x seq_len {seq_len}{f' x {world_size} processes' if world_size > 1 else ''}); "
                "give more text, or lower train.batch_size or train.seq_len"
            )
        mine = slice(rank * batch_size, (rank + 1) * batch_size)
        self.inputs = ids[: rows * length].reshape(rows, length)[mine]  # (B, L)
        self.targets = ids[1 : rows * length + 1].reshape(rows, length)[mine]  # (B, L)

    def window(self, index: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window `index`, each (B, T) int64."""
        return self.span(index * self.seq_len, self.seq_len, device)

    @property
    def columns(self) -> int:
        """Columns of each stream that windows cover (a shorter rest at the end is never read)."""
        return self.windows * self.seq_len

    def span(self, start: int, length: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of columns start .. start+length-1 of every stream, each (B, length) int64."""
        cols = slice(start, start + length)
        x = torch.from_numpy(np.ascontiguousarray(self.inputs[:, cols], dtype=np.int64))
        y = torch.from_numpy(np.ascontiguousarray(self.targets[:, cols], dtype=np.int64))
        if device is not None and device.type != "cpu":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x, y


def evaluation_blocks(ids: np.ndarray, batch_size: int):
    """Split ids for evaluation so that every token after the first is predicted exactly once.

    Returns (inputs, targets) of shape (B, L) plus a tail (inputs, targets) of shape (1, r)
    that continues row B-1 (or None). Together they predict all N-1 next tokens in order.
    """
    n = len(ids) - 1
    rows = max(1, min(batch_size, n))
    length = n // rows
    inputs = ids[: rows * length].reshape(rows, length)
    targets = ids[1 : rows * length + 1].reshape(rows, length)
    tail = None
    if rows * length < n:
        tail = (ids[rows * length : n].reshape(1, -1), ids[rows * length + 1 : n + 1].reshape(1, -1))
    return inputs, targets, tail


def to_tensor(block: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(block, dtype=np.int64)).to(device)


def bptt_length(seq_len: int, seed: int, step: int) -> int:
    """The window length of a step with train.variable_bptt, drawn as AWD-LSTM does around seq_len.

    Drawn from its own generator seeded by (seed, step): the same on every DDP rank and after a
    resume, and the training random stream is left as it is.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    base = seq_len if torch.rand((), generator=generator).item() < 0.95 else seq_len / 2
    length = int(base + 5 * torch.randn((), generator=generator).item())
    return max(min(MIN_BPTT, seq_len), min(length, 2 * seq_len))


def window_lr(lr: float, length: int, seq_len: int) -> float:
    """The learning rate of a window of `length` steps (AWD-LSTM: proportional to the length)."""
    return lr * length / seq_len if length != seq_len else lr

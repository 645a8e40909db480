"""Cutting a token stream into parallel streams (training) and blocks (evaluation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnngen.data.windows import TokenStreams, evaluation_blocks
from rnngen.errors import DataError


def test_windows_continue_each_stream_and_targets_are_shifted_by_one():
    ids = np.arange(25)
    streams = TokenStreams(ids, batch_size=4, seq_len=3)  # 24 predictions: 4 rows of 6 columns, 2 windows
    assert streams.windows == 2 and streams.columns == 6
    x0, y0 = streams.window(0)
    x1, _ = streams.window(1)
    assert x0.dtype == torch.int64 and x0.shape == (4, 3)
    assert x0[:, 0].tolist() == [0, 6, 12, 18]
    assert torch.equal(y0, x0 + 1)
    assert torch.equal(x1, x0 + 3)  # row r of window 1 continues where row r of window 0 stopped


def test_ranks_take_contiguous_blocks_of_rows():
    ids = np.arange(49)
    whole = TokenStreams(ids, batch_size=4, seq_len=3).window(0)[0]
    halves = [TokenStreams(ids, batch_size=2, seq_len=3, rank=r, world_size=2).window(0)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)


def test_too_short_a_text_is_refused_with_the_numbers():
    with pytest.raises(
        DataError, match=r"\(10 tokens\) is shorter than one training window \(batch_size 4 x seq_len 3\)"
    ):
        TokenStreams(np.arange(10), batch_size=4, seq_len=3)


@pytest.mark.parametrize("n, rows", [(2, 1), (10, 3), (10, 9), (10, 50), (101, 4)])
def test_evaluation_blocks_predict_every_token_after_the_first_exactly_once_in_order(n, rows):
    ids = np.arange(n) * 7
    inputs, targets, tail = evaluation_blocks(ids, rows)
    assert inputs.shape == targets.shape and inputs.shape[0] == min(rows, n - 1)
    pairs = list(zip(inputs.reshape(-1), targets.reshape(-1)))
    if tail is not None:
        assert tail[0].shape[0] == 1
        pairs += list(zip(tail[0].reshape(-1), tail[1].reshape(-1)))
    assert pairs == list(zip(ids[:-1], ids[1:]))  # rows in order, then the tail continuing the last row

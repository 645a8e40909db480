"""The recurrent-state helpers treat a tensor, an (h, c) pair and None alike."""

from __future__ import annotations

import torch

from rnngen.models.state import detach_state, hidden_of, join_streams, map_state, select_streams, state_tensors


def states():
    h = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)  # (L, B, H)
    return [h, (h, h + 100)]


def test_select_then_join_gives_the_state_back():
    for state in states():
        parts = [select_streams(state, slice(0, 1)), select_streams(state, slice(1, 4))]
        assert all(t.shape[1] == 1 for t in state_tensors(parts[0]))
        joined = join_streams(parts)
        assert type(joined) is type(state)
        assert all(torch.equal(a, b) for a, b in zip(state_tensors(joined), state_tensors(state)))


def test_shapes_are_kept_and_none_stays_none():
    h, pair = states()
    assert map_state(lambda s: s * 2, None) is None and state_tensors(None) == ()
    assert isinstance(map_state(lambda s: s * 2, pair), tuple) and torch.equal(hidden_of(pair), h)
    assert torch.equal(hidden_of(h), h)
    assert join_streams([None]) is None


def test_detach_cuts_the_graph():
    h = torch.ones(1, 2, 3, requires_grad=True) * 2
    for state in (h, (h, h)):
        assert not any(t.requires_grad for t in state_tensors(detach_state(state)))

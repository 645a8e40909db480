"""The recurrent state every model carries between calls, and the helpers that handle it.

A state is one tensor (rnn, gru: (L, B, H); ngram: (1, B, order-2); hmm: (1, B, K)), an (h, c) pair of them
(lstm), or None (start fresh). Everything that handles a state goes through map_state or
state_tensors, so no caller asks which of the shapes it holds.
"""

from __future__ import annotations

import torch


def map_state(fn, state):
    """fn applied to every tensor of the state, keeping its shape: a tensor, an (h, c) pair, or None."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(s) for s in state)
    return fn(state)


def state_tensors(state) -> tuple:
    """The tensors of a state as a tuple: (h, c) for lstm, (h,) otherwise, () for None."""
    if state is None:
        return ()
    return state if isinstance(state, tuple) else (state,)


def state_from_tensors(tensors, paired: bool):
    """The inverse of state_tensors: an (h, c) pair when paired (lstm), else the one tensor."""
    return tuple(tensors) if paired else tensors[0]


def hidden_of(state) -> torch.Tensor:
    """The hidden state h: the state itself, or the h of an (h, c) pair."""
    return state_tensors(state)[0]


def detach_state(state):
    """Cut the graph between BPTT windows: the values carry over, the gradients stop here."""
    return map_state(torch.Tensor.detach, state)


def select_streams(state, rows):
    """The state of some batch rows (e.g. the last stream when it continues into a tail)."""
    return map_state(lambda s: s[:, rows], state)


def join_streams(states: list):
    """States of consecutive row blocks side by side again: the inverse of select_streams."""
    if len(states) == 1 or states[0] is None:
        return states[0]
    joined = [torch.cat(parts, dim=1) for parts in zip(*map(state_tensors, states))]
    return state_from_tensors(joined, paired=isinstance(states[0], tuple))

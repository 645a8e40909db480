"""Fast one-token steps on the CPU for sampling: the whole model written out with pre-packed weights.

Generating text feeds one token at a time. PyTorch's fused RNN modules are built for long
windows; called for a single step on a CPU they spend most of their time setting up (oneDNN) or
in many small kernels. The stepper looks the token up, runs each layer as one matrix product
(input and recurrent weights packed side by side, gates reordered so the sigmoid gates are
contiguous) and a few element-wise operations, then the output layer: about a dozen tensor
operations per layer, so that the step costs little more than reading its weights. The weights
are copies (detached), so no autograd graph is built whichever grad mode the caller is in.

The matrices are `rnngen.models.precision` Affines at fp32, bf16 or int8, built once from the
model's weights. It computes the cells of rnngen.models.recurrent.py and keeps their state layout,
(L, B, H) or an (h, c) pair; `step(token_ids, state)` takes (B,) ids and returns (B, V) scores,
and calling it takes (B, T) ids and returns (B, T, V) scores like the model. With an adaptive
softmax the output layer is the model's own (fp32, exact log-probabilities). Training never uses it.

`stepper_for` keeps one stepper per model and precision, built again only when the model's
weights have changed (training samples at every evaluation), so quantizing happens once per load.
"""

from __future__ import annotations

import weakref

import torch

from rnngen.models import spelling
from rnngen.models.precision import affine
from rnngen.models.recurrent import RNNLM, OneHot


class CPUStepper:
    """model(token_ids, state) of an RNNLM in eval mode, one token at a time, at a given precision."""

    def __init__(self, model: RNNLM, precision: str = "fp32"):
        rnn = model.rnn
        self.mode, self.hidden_size, self.precision = rnn.mode, rnn.hidden_size, precision
        with torch.no_grad():
            # token id -> x_t: a row of the table (a spelled one composed once), or a one-hot vector when None
            self.table = None if isinstance(model.embedding, OneHot) else model.embedding.weight.detach()
            self.vocab_size = model.vocab_size
            self.layers = [self._pack(rnn, layer) for layer in range(rnn.num_layers)]
            if model.adaptive:
                self.output, self.adaptive = None, model.head
            else:  # tied to a spelled table: its composed rows
                weight = spelling.rows(model.head, "weight", 0, model.head.out_features)
                self.output, self.adaptive = affine(weight, model.head.bias, precision), None
        matrices = [a for layer in self.layers for a in layer] + ([self.output] if self.output else [])
        self.weight_bytes = sum(a.nbytes for a in matrices)  # read once per token (adaptive head aside)

    def _pack(self, rnn, layer: int) -> tuple:
        H, precision = self.hidden_size, self.precision
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
        if self.mode == "LSTM":  # PyTorch's gate order i, f, g, o -> i, f, o, g: one sigmoid, one tanh
            order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
            return (affine(torch.cat([w_ih, w_hh], 1)[order], (b_ih + b_hh)[order], precision),)
        if self.mode == "GRU":  # the candidate needs W_hn h + b_hn on its own (it is gated by r)
            return affine(w_ih, b_ih, precision), affine(w_hh, b_hh, precision)
        return (affine(torch.cat([w_ih, w_hh], 1), b_ih + b_hh, precision),)

    def initial_state(self, batch_size: int):
        zeros = torch.zeros(len(self.layers), batch_size, self.hidden_size)
        return (zeros, zeros.clone()) if self.mode == "LSTM" else zeros

    def __call__(self, token_ids: torch.Tensor, state=None):
        """token_ids (B, T) -> scores (B, T, V) and the state after the last step, like RNNLM.forward."""
        steps = []
        for t in range(token_ids.size(1)):
            scores, state = self.step(token_ids[:, t], state)
            steps.append(scores)
        return torch.stack(steps, 1), state

    def step(self, token_ids: torch.Tensor, state=None):
        """token_ids (B,) -> scores of the next token (B, V) and the new state."""
        if state is None:
            state = self.initial_state(token_ids.size(0))
        lstm = self.mode == "LSTM"
        h = state[0].unbind(0) if lstm else state.unbind(0)  # L x (B, H)
        c = state[1].unbind(0) if lstm else None
        if self.table is None:  # one-hot input
            x = torch.zeros(token_ids.size(0), self.vocab_size).scatter_(1, token_ids[:, None], 1.0)
        else:
            x = torch.index_select(self.table, 0, token_ids)  # (B, E)
        new_h, new_c = [], []
        for layer, weights in enumerate(self.layers):
            if lstm:
                x, c_layer = _lstm_cell(weights[0], x, h[layer], c[layer], self.hidden_size)
                new_c.append(c_layer)
            elif self.mode == "GRU":
                x = _gru_cell(weights, x, h[layer], self.hidden_size)
            else:
                pre = weights[0](torch.cat([x, h[layer]], 1))
                x = pre.tanh_() if self.mode == "RNN_TANH" else pre.relu_()
            new_h.append(x)
        scores = self.output(x) if self.output is not None else self.adaptive(x)  # (B, V)
        return scores, ((torch.stack(new_h), torch.stack(new_c)) if lstm else torch.stack(new_h))


def _lstm_cell(packed, x, h, c, H: int):
    gates = packed(torch.cat([x, h], 1))  # (B, 4H): i, f, o, g
    sig = gates[:, : 3 * H].sigmoid_()  # slices of it are views: every operation here counts, at one row
    c = torch.addcmul(sig[:, H : 2 * H] * c, sig[:, :H], gates[:, 3 * H :].tanh_())
    return sig[:, 2 * H :] * c.tanh(), c


def _gru_cell(weights, x, h, H: int):
    w_ih, w_hh = weights
    gi, gh = w_ih(x), w_hh(h)  # (B, 3H): r, z, n
    rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
    n = torch.tanh(gi[:, 2 * H :] + rz[:, :H] * gh[:, 2 * H :])
    return torch.lerp(n, h, rz[:, H:])  # (1 - z) * n + z * h


_STEPPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {precision: (weights key, stepper)}


def stepper_for(model: RNNLM, precision: str = "fp32") -> CPUStepper:
    """The model's stepper at this precision, packed (and quantized) once per version of its weights."""
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())  # moved or updated: pack again
    kept = _STEPPERS.setdefault(model, {})
    if precision not in kept or kept[precision][0] != key:
        kept[precision] = (key, CPUStepper(model, precision))
    return kept[precision][1]

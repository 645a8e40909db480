"""Fast one-token steps on the CPU for sampling: the recurrence written out with pre-packed weights.

Generating text feeds one token at a time. PyTorch's fused RNN modules are built for long
windows; called for a single step on a CPU they spend most of their time setting up (oneDNN) or
in many small kernels. The stepper packs each layer's input and recurrent weights into one
matrix (gates reordered so the sigmoid gates are contiguous) and runs one matrix multiply and a
few element-wise operations per layer.

The multiply is W (G*H x I) times the batch's inputs as columns (I x B), not inputs times W^T:
BLAS packs its right-hand operand on every call, and packing the few columns of a batch costs
little, while packing the whole weight matrix cost more than the multiply itself (with MKL on 2
cores, 32 rows of a 2x512 LSTM layer took 4.8 ms one way and 2.0 ms the other; bench/serve_load.py). It computes exactly the cells of rnngen/models/recurrent.py and
keeps their state layout, (L, B, H) or an (h, c) pair, so it can stand in for `model.rnn`.
Training never uses it.
"""

from __future__ import annotations

import torch
from torch import nn


class CPUStepper(nn.Module):
    """Stands in for an nn.RNN / nn.LSTM / nn.GRU (batch_first, eval mode) on inputs of any length."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.mode = rnn.mode  # "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
        self.hidden_size = rnn.hidden_size
        self.layers = []
        for layer in range(rnn.num_layers):
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
            self.layers.append(self._pack(w_ih.detach(), w_hh.detach(), b_ih.detach(), b_hh.detach()))

    def _pack(self, w_ih, w_hh, b_ih, b_hh):
        H = self.hidden_size
        if self.mode == "LSTM":  # PyTorch's gate order i, f, g, o -> i, f, o, g: one sigmoid, one tanh
            order = torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
            return torch.cat([w_ih, w_hh], 1)[order].contiguous(), (b_ih + b_hh)[order, None]
        if self.mode == "GRU":  # the candidate needs W_hn h + b_hn on its own (it is gated by r)
            return w_ih.contiguous(), w_hh.contiguous(), b_ih[:, None], b_hh[:, None]
        return torch.cat([w_ih, w_hh], 1).contiguous(), (b_ih + b_hh)[:, None]

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor, state=None):
        """inputs (B, T, E) -> outputs (B, T, H) and the state after the last step, like the module."""
        B, T, _ = inputs.shape
        L, H = len(self.layers), self.hidden_size
        zeros = inputs.new_zeros(L, B, H)
        lstm = self.mode == "LSTM"
        if state is None:
            state = (zeros, zeros.clone()) if lstm else zeros
        h = list(state[0].unbind(0)) if lstm else list(state.unbind(0))  # L x (B, H)
        c = list(state[1].unbind(0)) if lstm else None
        outputs = []
        for t in range(T):
            x = inputs[:, t]  # (B, E)
            for layer, weights in enumerate(self.layers):
                if lstm:
                    packed, bias = weights
                    gates = _affine(packed, bias, torch.cat([x, h[layer]], 1))  # (B, 4H)
                    sig = torch.sigmoid(gates[:, : 3 * H])  # i, f, o
                    c[layer] = torch.addcmul(sig[:, H : 2 * H] * c[layer], sig[:, :H], torch.tanh(gates[:, 3 * H :]))
                    h[layer] = sig[:, 2 * H :] * torch.tanh(c[layer])
                elif self.mode == "GRU":
                    w_ih, w_hh, b_ih, b_hh = weights
                    gi = _affine(w_ih, b_ih, x)  # (B, 3H): r, z, n
                    gh = _affine(w_hh, b_hh, h[layer])
                    rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
                    n = torch.tanh(gi[:, 2 * H :] + rz[:, :H] * gh[:, 2 * H :])
                    h[layer] = torch.lerp(n, h[layer], rz[:, H:])  # (1 - z) * n + z * h
                else:
                    packed, bias = weights
                    pre = _affine(packed, bias, torch.cat([x, h[layer]], 1))
                    h[layer] = torch.tanh(pre) if self.mode == "RNN_TANH" else torch.relu(pre)
                x = h[layer]
            outputs.append(x)
        new_state = (torch.stack(h), torch.stack(c)) if lstm else torch.stack(h)
        return torch.stack(outputs, 1), new_state


def _affine(weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """rows (B, I) -> rows W^T + b (B, G): computed as W (G, I) times the rows as columns, plus b (G, 1)."""
    return torch.addmm(bias, weight, rows.t()).t()

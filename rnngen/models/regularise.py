"""AWD-LSTM's regularisers (Merity, Keskar & Socher, 2017), all active in training mode only.

With h^l_t the output of layer l at step t, x_t the embedded token and B x T a window:

  - locked (variational) dropout: one Bernoulli mask m (B, 1, D), scaled by 1/(1-p), drawn per
    window and reused at every time step: x_t * m. Separate rates on the embedding output
    (model.dropout_input), between stacked layers (model.dropout_hidden) and on the last layer's
    output (model.dropout_output).
  - embedding dropout: a mask over the rows of the embedding table E (V x D), drawn per window:
    E' = diag(b) E / (1-p), b_v ~ Bernoulli(1-p); a dropped word is zero at every step of the window.
  - weight drop (DropConnect): W'_hh = W_hh * M / (1-p) with M an elementwise Bernoulli mask drawn
    once per forward pass, for every layer's hidden-to-hidden matrix. The dropped matrix is handed
    to the fused recurrent kernel in place of the raw parameter (torch.func.functional_call), so
    training keeps the cuDNN/oneDNN kernel, gradients reach the raw W_hh, and evaluation and
    sampling (which read the module's own parameters) see the raw weights.
  - AR: alpha * mean(o_t^2) over the last layer's dropped output o_t;
    TAR: beta * mean((h_t - h_{t-1})^2) over the last layer's undropped output.

AWD-LSTM's variable-length BPTT windows are drawn where every window length is decided, in
rnngen.data.windows.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

MODEL_KEYS = ("locked_dropout", "dropout_input", "dropout_hidden", "dropout_output", "embedding_dropout", "weight_drop")


def model_args(model_config) -> dict:
    """The regularisers of model.*, for a checkpoint's model_args: only those that are set, so old
    checkpoints and new ones without regularisers carry the same arguments."""
    return {k: getattr(model_config, k) for k in MODEL_KEYS if getattr(model_config, k) not in (None, False, 0.0)}


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence (B, 1, D), shared by every time step of a (B, T, D) input."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_layer(p: float, locked: bool) -> nn.Module:
    return LockedDropout(p) if locked else nn.Dropout(p)


def embedding_dropout(embedding: nn.Embedding, token_ids: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Look up token_ids with whole rows of the table dropped (the kept rows scaled by 1/(1-p))."""
    if not training or p == 0:
        return embedding(token_ids)
    weight = embedding.weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
    return F.embedding(token_ids, weight * mask)


def dropped_recurrent_weights(rnn: nn.RNNBase, p: float, layers: range) -> dict[str, torch.Tensor]:
    """{"weight_hh_l<k>": W_hh * mask / (1-p)} for the given layers: one fresh mask each."""
    names = [f"weight_hh_l{k}" for k in layers]
    return {name: F.dropout(getattr(rnn, name), p, training=True) for name in names}


def _keep_unflattened() -> None:
    """Stands in for RNNBase.flatten_parameters while the weights are swapped (see run_with)."""


@contextlib.contextmanager
def _swapped_weights(rnn: nn.RNNBase):
    """Swapping a weight makes the module re-flatten its weights into cuDNN's buffer, which would
    rewrite the storage of the (non-leaf) dropped tensors; the kernel takes them as they are."""
    rnn.flatten_parameters = _keep_unflattened
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            yield
    finally:
        del rnn.flatten_parameters


def run_with(rnn: nn.RNNBase, weights: dict[str, torch.Tensor], inputs: torch.Tensor, state):
    """rnn(inputs, state) with some of its parameters replaced by `weights`, on the fused kernel."""
    with _swapped_weights(rnn):
        return functional_call(rnn, weights, (inputs, state))


def layer_shell(rnn: nn.RNNBase, layer: int) -> nn.RNNBase:
    """A one-layer module of the same kind and sizes as `layer` of rnn, without storage (meta
    device): it runs that layer on weights passed in with run_with."""
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    size = rnn.input_size if layer == 0 else rnn.hidden_size
    return type(rnn)(size, rnn.hidden_size, batch_first=rnn.batch_first, device="meta", **kwargs)


def layer_weights(rnn: nn.RNNBase, layer: int) -> dict[str, torch.Tensor]:
    """Layer `layer`'s parameters under the names of a one-layer module (..._l0)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return {f"{n}_l0": getattr(rnn, f"{n}_l{layer}") for n in names}


def activation_penalty(dropped: torch.Tensor, raw: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AR + TAR on the last layer's outputs (B, T, H): alpha * mean(dropped^2) + beta * mean((raw_t - raw_{t-1})^2)."""
    penalty = dropped.new_zeros(())
    if alpha:
        penalty = penalty + alpha * dropped.pow(2).mean()
    if beta and raw.size(1) > 1:
        penalty = penalty + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
    return penalty

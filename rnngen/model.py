"""The recurrent language model: embedding -> stacked RNN/LSTM/GRU -> linear layer -> softmax.

For the plain rnn cell each layer computes the textbook recurrence

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

(relu instead of tanh with model.nonlinearity: relu). The output layer turns h_t into one score
(logit) per vocabulary token; softmax of the scores is the next-token distribution, and training
minimises its cross-entropy. Training runs PyTorch's fused recurrent modules (cuDNN on GPUs,
oneDNN/ATen kernels on CPUs), never a Python loop over time steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RECURRENT_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def model_args(model_config, vocab_size: int) -> dict:
    """Exactly what rebuilds the module: stored in every checkpoint."""
    m = model_config
    return {
        "vocab_size": vocab_size,
        "cell": m.cell,
        "nonlinearity": m.nonlinearity,
        "embedding_dim": m.embedding_dim,
        "hidden_size": m.hidden_size,
        "num_layers": m.num_layers,
        "dropout": m.dropout,
        "tie_weights": m.tie_weights,
    }


class RNNLM(nn.Module):
    """A word- or character-level recurrent language model."""

    def __init__(self, vocab_size, cell, embedding_dim, hidden_size, num_layers, dropout, tie_weights, nonlinearity="tanh"):
        super().__init__()
        self.cell = cell
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = RECURRENT_MODULES[cell](
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            **extra,
        )
        self.head = nn.Linear(hidden_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if tie_weights:  # one matrix both reads tokens in and scores them out (Press & Wolf, 2017)
            self.head.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def forward(self, token_ids: torch.Tensor, state=None):
        """token_ids (B, T) -> logits (B, T, V) and the state after the last step."""
        embedded = self.dropout(self.embedding(token_ids))  # (B, T, E)
        outputs, state = self.rnn(embedded, state)  # (B, T, H); state (L, B, H) or a pair of them
        return self.head(self.dropout(outputs)), state  # (B, T, V)

    def initial_state(self, batch_size: int, device=None):
        """Zeros: (L, B, H) for rnn/gru, an (h, c) pair of them for lstm."""
        weight = self.head.weight
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device or weight.device, dtype=weight.dtype)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def loss(self, token_ids: torch.Tensor, targets: torch.Tensor, state=None, reduction: str = "mean"):
        """Cross-entropy (nats per token) of predicting `targets` (B, T), and the new state."""
        logits, state = self(token_ids, state)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction), state

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Log-softmax of the logits: log p(next token) over the vocabulary."""
        return F.log_softmax(logits.float(), dim=-1)


def detach_state(state):
    """Cut the graph between BPTT windows: the values carry over, the gradients stop here."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def select_streams(state, rows):
    """The state of some batch rows (e.g. the last stream when it continues into a tail)."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def build_model(args: dict) -> nn.Module:
    """Rebuild a model from the model_args stored in a checkpoint."""
    return RNNLM(**args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""The recurrent language model: embedding -> stacked RNN/LSTM/GRU -> linear layer -> softmax.

For the plain rnn cell each layer computes the textbook recurrence

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

(relu instead of tanh with model.nonlinearity: relu). The output layer turns h_t into one score
(logit) per vocabulary token; softmax of the scores is the next-token distribution, and training
minimises its cross-entropy. Training runs PyTorch's fused recurrent modules (cuDNN on GPUs,
oneDNN/ATen kernels on CPUs), never a Python loop over time steps.

Input x_t (model.input):
  - embedding: a learned E-dim vector per token; W_ih is then G*H x E (G = 1, 4, 3 gates for
    rnn, lstm, gru).
  - onehot: x_t is the theory's V-dim one-hot vector and the first layer's weight_ih (G*H x V) is
    W_xh itself. W_xh x_t just picks column x_t of W_xh (a row lookup of W_xh^T), so the one-hot
    model is the embedding model with E = V and an identity table. The fused kernel does that
    product for the whole window in one matrix multiply, V/E times the work of an embedding's:
    cheap for characters (V of 50-300), pointless for word vocabularies, so it is refused above
    ONEHOT_MAX_VOCAB tokens.
Output (model.output): a full V x H linear layer, or an adaptive softmax (rnngen.models.adaptive) whose
forward returns exact log-probabilities, so everything that reads logits works unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnngen import console
from rnngen.errors import ConfigError
from rnngen.models import cache, regularise, spelling
from rnngen.models.adaptive import ADAPTIVE_FROM, AdaptiveSoftmax, default_cutoffs

RECURRENT_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
ONEHOT_WARN_VOCAB = 1_000  # above this, one-hot input costs more than a typical embedding: say so
ONEHOT_MAX_VOCAB = 10_000


def model_args(model_config, vocab_size: int, tokens: list[str] | None = None) -> dict:
    """Exactly what rebuilds the module: stored in every checkpoint. `tokens` (the vocabulary) for model.spelling."""
    m = model_config
    output, cutoffs = _output_layer(m, vocab_size)
    if m.input == "onehot":
        _check_onehot(vocab_size)
    return {
        "vocab_size": vocab_size,
        "cell": m.cell,
        "nonlinearity": m.nonlinearity,
        "embedding_dim": m.embedding_dim,
        "hidden_size": m.hidden_size,
        "num_layers": m.num_layers,
        "dropout": m.dropout,
        "tie_weights": m.tie_weights,
        "input": m.input,
        "output": output,
        "cutoffs": cutoffs,
        **({"tied_tails": True} if m.tie_weights and output == "adaptive" else {}),  # absent: untied tails
        "freeze_embedding": m.embeddings_freeze,
        **regularise.model_args(m),
        **cache.model_args(m),
        **({"spelling": spelling.model_args(tokens)} if m.spelling else {}),  # absent: one row per word
    }


def _output_layer(m, vocab_size: int) -> tuple[str, list[int] | None]:
    """model.output and model.adaptive_cutoffs, resolved against the vocabulary: ("full", None) or ("adaptive", cutoffs)."""
    output = m.output
    if output == "auto":
        output = "adaptive" if vocab_size >= ADAPTIVE_FROM else "full"
    cutoffs = list(m.adaptive_cutoffs) if m.adaptive_cutoffs else default_cutoffs(vocab_size)
    if output == "full" or not cutoffs:
        return "full", None
    if cutoffs[-1] >= vocab_size:
        raise ConfigError(
            f"model.adaptive_cutoffs {cutoffs} must all be below the vocabulary size ({vocab_size:,} tokens); "
            "lower them, set adaptive_cutoffs: null to choose them automatically, or set model.output: full"
        )
    if m.output == "auto":
        console.info(f"model.output auto: {vocab_size:,} tokens of vocabulary -> adaptive softmax, cutoffs {cutoffs}")
    return "adaptive", cutoffs


def _check_onehot(vocab_size: int) -> None:
    if vocab_size > ONEHOT_MAX_VOCAB:
        raise ConfigError(
            f"model.input: onehot would feed {vocab_size:,}-dimensional one-hot vectors (the vocabulary size) into "
            f"the network, which is slow and memory-hungry above {ONEHOT_MAX_VOCAB:,} tokens; use model.input: "
            "embedding (the same first layer with a learned, smaller input), or shrink the vocabulary with "
            "data.min_freq or data.max_vocab"
        )
    if vocab_size > ONEHOT_WARN_VOCAB:
        console.warn(
            f"model.input: onehot with {vocab_size:,} tokens of vocabulary costs {vocab_size:,} multiply-adds per "
            "gate unit and token in the first layer; model.input: embedding is much faster at this size"
        )


class OneHot(nn.Module):
    """token ids (B, T) -> one-hot vectors (B, T, V): the theory's x_t. Dropout on them drops whole tokens."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        vectors = torch.zeros(*token_ids.shape, self.vocab_size, device=token_ids.device)  # (B, T, V)
        return vectors.scatter_(-1, token_ids.unsqueeze(-1), 1.0)


def _input_layer(vocab_size: int, embedding_dim: int, onehot: bool, spelled: dict | None) -> nn.Module:
    """token ids -> x_t: one-hot vectors, an embedding table, or one composed by spelling (rnngen.models.spelling)."""
    if onehot:
        return OneHot(vocab_size)
    if spelled:
        return spelling.SpelledEmbedding(vocab_size, embedding_dim, **spelled)
    return nn.Embedding(vocab_size, embedding_dim)


class FullSoftmax(nn.Linear):
    """h_t (..., H) -> one score per vocabulary token (..., V): W h_t + b, W's rows possibly the embedding's."""

    def __init__(self, hidden_size: int, vocab_size: int):
        super().__init__(hidden_size, vocab_size)
        nn.init.zeros_(self.bias)

    def tie_to(self, embedding: nn.Module) -> None:
        """Score with the embedding table (a spelled one's rows are composed afresh on each use)."""
        spelling.tie(self, "weight", embedding)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, spelling.rows(self, "weight", 0, self.out_features), self.bias)


class RNNLM(nn.Module):
    """A word- or character-level recurrent language model."""

    def __init__(
        self, vocab_size, cell, embedding_dim, hidden_size, num_layers, dropout, tie_weights, nonlinearity="tanh",
        input="embedding", output="full", cutoffs=None, freeze_embedding=False, locked_dropout=False,
        dropout_input=None, dropout_hidden=None, dropout_output=None, embedding_dropout=0.0, weight_drop=0.0,
        tied_tails=False, pointer=None, spelling=None,
    ):  # fmt: skip
        super().__init__()
        self.pointer = cache.Pointer(**pointer) if pointer else None  # used in scoring only (rnngen.models.cache)
        self.cell = cell
        self.vocab_size = vocab_size
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.adaptive = output == "adaptive"
        onehot = input == "onehot"
        self.embedding = _input_layer(vocab_size, embedding_dim, onehot, spelling)
        # dropout: model.dropout everywhere unless a place has its own rate (rnngen.models.regularise)
        rates = [dropout if r is None else r for r in (dropout_input, dropout_hidden, dropout_output)]
        self.input_dropout = regularise.dropout_layer(rates[0], locked_dropout)
        self.output_dropout = regularise.dropout_layer(rates[2], locked_dropout)
        self.embedding_dropout, self.weight_drop = embedding_dropout, weight_drop
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = RECURRENT_MODULES[cell](
            vocab_size if onehot else embedding_dim,
            hidden_size,
            num_layers=num_layers,
            dropout=rates[1] if num_layers > 1 and not locked_dropout else 0.0,
            batch_first=True,
            **extra,
        )
        self.hidden_dropout = None  # locked dropout between layers: training runs the layers one by one
        if locked_dropout and num_layers > 1 and rates[1] > 0:
            self.hidden_dropout = regularise.LockedDropout(rates[1])
            self.__dict__["layer_shells"] = [regularise.layer_shell(self.rnn, k) for k in range(num_layers)]
        if self.adaptive:
            self.head = AdaptiveSoftmax(hidden_size, vocab_size, cutoffs, tied_tails)
        else:
            self.head = FullSoftmax(hidden_size, vocab_size)
        if isinstance(self.embedding, nn.Embedding):
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        for p in self.embedding.parameters():
            p.requires_grad_(not freeze_embedding)  # pre-trained vectors kept as they are
        if tie_weights:  # one matrix both reads tokens in and scores them out (Press & Wolf, 2017)
            # every word's output row is its embedding row (adaptive before tied tails: head words only)
            self.head.tie_to(self.embedding)
        elif not self.adaptive:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def forward(self, token_ids: torch.Tensor, state=None):
        """token_ids (B, T) -> logits (B, T, V) and the state after the last step.

        With adaptive output the "logits" are the exact log-probabilities (log_softmax leaves them as
        they are), so sampling and evaluation treat both output layers alike.
        """
        with spelling.composed_once(self.embedding):
            outputs, state = self.features(token_ids, state)  # (B, T, H)
            return self.head(outputs), state  # (B, T, V)

    def features(self, token_ids: torch.Tensor, state=None):
        """token_ids (B, T) -> top-layer outputs (B, T, H) after dropout, and the state after the last step."""
        outputs, _, state = self.all_features(token_ids, state)
        return outputs, state

    def all_features(self, token_ids: torch.Tensor, state=None):
        """Top-layer outputs after and before dropout (B, T, H), and the state after the last step."""
        if isinstance(self.embedding, OneHot):
            embedded = self.embedding(token_ids)
        else:
            embedded = regularise.embedding_dropout(self.embedding, token_ids, self.embedding_dropout, self.training)
        embedded = self.input_dropout(embedded)  # (B, T, E), or (B, T, V) one-hot
        if self.training and (self.hidden_dropout is not None or self.weight_drop):
            outputs, state = self._regularised_rnn(embedded, state)
        else:  # state (L, B, H) or a pair of them
            outputs, state = self.rnn(embedded, state)  # (B, T, H)
        return self.output_dropout(outputs), outputs, state

    def _regularised_rnn(self, inputs: torch.Tensor, state):
        """The recurrent layers in training with weight drop and/or locked dropout between layers."""
        layers = range(self.num_layers)
        dropped = regularise.dropped_recurrent_weights(self.rnn, self.weight_drop, layers) if self.weight_drop else {}
        if self.hidden_dropout is None:  # all layers in one call
            return regularise.run_with(self.rnn, dropped, inputs, state)
        if state is None:
            state = self.initial_state(inputs.size(0), inputs.device)
        states = []
        for k in layers:
            weights = regularise.layer_weights(self.rnn, k)
            if dropped:
                weights["weight_hh_l0"] = dropped[f"weight_hh_l{k}"]
            layer_state = tuple(s[k : k + 1] for s in state) if isinstance(state, tuple) else state[k : k + 1]
            inputs, layer_state = regularise.run_with(self.layer_shells[k], weights, inputs, layer_state)
            states.append(layer_state)
            if k < self.num_layers - 1:
                inputs = self.hidden_dropout(inputs)
        if isinstance(states[0], tuple):
            return inputs, tuple(torch.cat(parts) for parts in zip(*states))
        return inputs, torch.cat(states)

    def cost_per_token(self) -> int:
        """Multiply-adds to read one token and score the next (rnngen compare): one per recurrent weight and output
        row entry; an adaptive softmax counts its head, which scores most tokens. The embedding is a row lookup."""
        recurrent = sum(p.numel() for name, p in self.rnn.named_parameters() if name.startswith("weight"))
        rows = self.head.shortlist + self.head.cluster_weight.size(0) if self.adaptive else self.head.out_features
        return recurrent + rows * self.hidden_size

    def initial_state(self, batch_size: int, device=None):
        """Zeros: (L, B, H) for rnn/gru, an (h, c) pair of them for lstm (layer-by-layer training needs it)."""
        weight = self.rnn.weight_hh_l0
        zeros = torch.zeros(
            self.num_layers, batch_size, self.hidden_size, device=device or weight.device, dtype=weight.dtype
        )
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def loss(self, token_ids: torch.Tensor, targets: torch.Tensor, state=None, reduction: str = "mean"):
        """Cross-entropy (nats per token) of predicting `targets` (B, T), and the new state."""
        loss, _, state = self.loss_and_outputs(token_ids, targets, state, reduction)
        return loss, state

    def loss_and_outputs(self, token_ids, targets, state=None, reduction: str = "mean"):
        """The loss, the top-layer outputs after and before dropout, and the new state."""
        with spelling.composed_once(self.embedding):
            outputs, raw, state = self.all_features(token_ids, state)  # (B, T, H)
            if self.adaptive:  # never builds (B, T, V): the head, plus each tail cluster on its own targets only
                nll = self.head.nll(outputs.reshape(-1, outputs.size(-1)), targets.reshape(-1))  # (B*T,)
                return _reduce(nll, reduction), (outputs, raw), state
            logits = self.head(outputs)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return loss, (outputs, raw), state

    def training_loss(self, token_ids, targets, state=None, ar_alpha: float = 0.0, tar_beta: float = 0.0):
        """(objective to minimise, mean cross-entropy, new state): the objective adds AR/TAR when set."""
        loss, (outputs, raw), state = self.loss_and_outputs(token_ids, targets, state)
        if not (ar_alpha or tar_beta):
            return loss, loss, state
        return loss + regularise.activation_penalty(outputs, raw, ar_alpha, tar_beta), loss, state


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """The reductions of F.cross_entropy: "mean", "sum" or "none"."""
    if reduction == "sum":
        return values.sum()
    return values.mean() if reduction == "mean" else values

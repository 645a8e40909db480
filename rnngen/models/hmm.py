"""The Hidden Markov Model: every token gets a hidden state, and a text's probability sums over all of them.

K hidden states, a vocabulary of V tokens, three distributions (each a softmax of free logits):

    z_1 ~ start (K)          z_t ~ transition[z_{t-1}] (K x K)          x_t ~ emission[z_t] (K x V)

p(x_1..x_T) is the sum over all K^T state paths of start(z_1) prod transition(z_{t-1}, z_t) prod
emission(z_t, x_t). The forward algorithm does that sum in T steps of K^2 work: it carries one
normalised vector, the distribution of the next hidden state given the tokens so far,

    q_t = p(z_{t+1} | x_1..x_t)                                   (K,)   q_0 = start
    c_t = sum_k q_{t-1}(k) emission(k, x_t) = p(x_t | x_<t)       the token's probability
    q_t = (q_{t-1} * emission(:, x_t) / c_t) @ transition          filter (Bayes' rule), then predict

and log p(x_1..x_T) = sum_t log c_t exactly. So an HMM is a recurrent model whose state is q_t:
shaped (1, B, K) like an RNN's (layers, B, H), carried between BPTT windows and detached there,
so the trainer, resume, evaluation, sampling and serving treat it as any cell. Its next-token
distribution is q_t @ emission. Training maximises the exact marginal likelihood by gradient
(Chiu & Rush 2020), back-propagating through the T steps of each window.

Numerics: the scaled forward above (a matmul and a few element-wise operations per step), not
log-space (a logsumexp over K x K per step): on 2 CPU cores the log-space step was 3x slower at
K = 128 and 23x at K = 512 (docs/markov.md). Dividing by c_t every step keeps q_t a distribution,
so nothing under- or overflows however long the text; the emission column of each token is
scaled by its largest entry first (log added back), so even a token every state finds unlikely
has a representable c_t. The recursion always runs in float32, also under mixed-precision
autocast: bf16 would round the carried distribution at every step.

Storage: emission_logits is (V, K), token-major, so a window's emission columns are one row
lookup (F.embedding) and its gradient one dense scatter; column k is state k's distribution.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from rnngen.data.vocab import UNK_ID


class Tables:
    """The normalised distributions the logits stand for."""

    def __init__(self, start: torch.Tensor, transition: torch.Tensor, emission_log: torch.Tensor):
        self.start = start  # (K,) p(z_1)
        self.transition = transition  # (K, K) p(z_t | z_{t-1}), rows sum to 1
        self.emission_log = emission_log  # (V, K) log p(x | z), each column a distribution over the vocabulary

    @functools.cached_property
    def emission(self) -> torch.Tensor:
        """(V, K) the emissions as probabilities: made when asked for (the loss needs only the log ones)."""
        return self.emission_log.exp()


def model_args(model_config, vocab_size: int) -> dict:
    """The checkpoint's model_args for an HMM: what rnngen.models.registry.build_model rebuilds it from."""
    return {"cell": "hmm", "vocab_size": vocab_size, "hmm_states": model_config.hmm_states}


class HiddenMarkovLM(nn.Module):
    """A Hidden Markov Model with the interface of an RNNLM: forward, loss, training_loss, and Viterbi.

    `model(token_ids (B, T), state) -> (log-probabilities (B, T, V), state)`, the state being the
    predictive distribution q (1, B, K) after the last input; None starts a text (q = start).
    """

    def __init__(self, vocab_size: int, hmm_states: int, cell: str = "hmm"):
        super().__init__()
        self.cell, self.vocab_size, self.hmm_states = cell, vocab_size, hmm_states
        # random logits break the symmetry between states (equal ones would get equal gradients forever)
        self.start_logits = nn.Parameter(torch.randn(hmm_states))
        self.transition_logits = nn.Parameter(torch.randn(hmm_states, hmm_states))
        self.emission_logits = nn.Parameter(torch.randn(vocab_size, hmm_states))
        self._memo = None  # (parameter versions, Tables) while scoring without gradients

    def cost_per_token(self) -> int:
        """Multiply-adds to read one token and score the next: K^2 (predict) + K (filter and score)."""
        return self.hmm_states**2 + self.hmm_states

    # ----------------------------------------------------------------------- the distributions

    def tables(self) -> Tables:
        """The distributions; without gradients (sampling, evaluation) computed once per weight version.

        A sampler asks for them at every token, and normalising the V x K emission table costs more
        than the step itself, so they are kept while the weights stay as they are (an optimizer
        step or load_state_dict bumps the parameters' version counters, a move changes their storage).
        """
        if torch.is_grad_enabled():
            self._memo = None  # training: fresh tables with a graph every step; no stale copy held
            return self._normalise()
        key = tuple((p.device, p.data_ptr(), p._version) for p in self.parameters())
        if self._memo is None or self._memo[0] != key:
            self._memo = (key, self._normalise())
        return self._memo[1]

    def _normalise(self) -> Tables:
        return Tables(
            torch.softmax(self.start_logits.float(), dim=0),
            torch.softmax(self.transition_logits.float(), dim=-1),
            torch.log_softmax(self.emission_logits.float(), dim=0),
        )

    # ----------------------------------------------------------------------- the forward algorithm

    def _prior(self, tables: Tables, state, batch_size: int) -> torch.Tensor:
        """q before the first input (B, K): the carried state, or the start distribution."""
        return tables.start.expand(batch_size, -1) if state is None else state[0]

    def _read(self, tables: Tables, prior: torch.Tensor, token_ids: torch.Tensor, predict_last: bool = True):
        """Take in tokens (B, T) from prior q (B, K): log p(each token | the ones before) (B, T) and q after each.

        One matmul and three element-wise operations per step; c_t is the normaliser of the filter.
        predict_last=False stops after scoring the last token (its q is not needed).
        """
        logs = F.embedding(token_ids, tables.emission_log)  # (B, T, K) log emission(k, x_t)
        top = logs.detach().amax(dim=-1, keepdim=True)  # (B, T, 1) a constant: it only scales
        columns = (logs - top).exp()  # (B, T, K), largest entry 1
        q, norms, states = prior, [], []
        steps = token_ids.size(1)
        # unbind, not columns[:, t]: the backward of T selects would fill T zero tensors of the whole (B, T, K)
        for t, column in enumerate(columns.unbind(dim=1)):
            joint = q * column  # (B, K) p(z_t = k, x_t | x_<t), scaled
            norm = joint.sum(dim=-1, keepdim=True)  # (B, 1) c_t, scaled
            norms.append(norm)
            if predict_last or t < steps - 1:
                q = (joint / norm) @ tables.transition  # (B, K) p(z_{t+1} | x_<=t)
                states.append(q)
        return torch.cat(norms, dim=1).log() + top.squeeze(-1), states

    def forward(self, token_ids: torch.Tensor, state=None):
        """token_ids (B, T) -> log-probabilities (B, T, V) of the next token, and the new state (1, B, K)."""
        with _float32(token_ids):
            tables = self.tables()
            _, states = self._read(tables, self._prior(tables, state, token_ids.size(0)), token_ids)
            predictive = torch.stack(states, dim=1)  # (B, T, K)
            probs = predictive @ tables.emission.T  # (B, T, V) sum_k q_t(k) emission(k, v)
            return probs.log(), states[-1][None]

    def loss(self, token_ids: torch.Tensor, targets: torch.Tensor, state=None, reduction: str = "mean"):
        """Cross-entropy (nats per token) of `targets` (B, T), looking up only the targets' emissions.

        The targets are the inputs shifted by one (every window in rnngen is), so the filter steps that
        score them also read the inputs after the first: T matmuls in all, and no (B, T, V) tensor.
        """
        assert torch.equal(token_ids[:, 1:], targets[:, :-1]), "targets must be the inputs shifted by one"
        with _float32(token_ids):
            tables = self.tables()
            stream = torch.cat([token_ids[:, :1], targets], dim=1)  # x_0, then every target: x_1 .. x_T
            logp, states = self._read(tables, self._prior(tables, state, token_ids.size(0)), stream, False)
            nll = -logp[:, 1:]  # (B, T); logp[:, 0] scores x_0, the previous window's last target
        new_state = states[-1][None]  # (1, B, K)
        if reduction == "sum":
            return nll.sum(), new_state
        return (nll.mean() if reduction == "mean" else nll.reshape(-1)), new_state

    def training_loss(self, token_ids, targets, state=None, ar_alpha: float = 0.0, tar_beta: float = 0.0):
        """(objective, mean cross-entropy, new state), as RNNLM's; AR/TAR act on RNN outputs (refused for hmm)."""
        loss, state = self.loss(token_ids, targets, state)
        return loss, loss, state

    @torch.no_grad()
    def log_likelihood(self, token_ids: torch.Tensor) -> torch.Tensor:
        """log p(x_1..x_T) of texts (B, T) from their start: the sum over all K^T state paths, per row (B,)."""
        tables = self.tables()
        logp, _ = self._read(tables, self._prior(tables, None, token_ids.size(0)), token_ids, predict_last=False)
        return logp.sum(dim=1)

    # ----------------------------------------------------------------------- the labels

    @torch.no_grad()
    def viterbi(self, token_ids: torch.Tensor) -> tuple[list[int], float]:
        """The most likely state path of a text (T,) from its start, and that path's log-probability.

        The forward algorithm with max in place of sum (log space: no normaliser to divide by),
        keeping the best predecessor of every state at every step; then read back from the end.
        """
        tables = self.tables()
        log_transition = tables.transition.log()  # (K, K)
        emissions = F.embedding(token_ids, tables.emission_log)  # (T, K)
        best = tables.start.log() + emissions[0]  # (K,) best log-prob of a path ending in each state
        back = []
        for t in range(1, len(token_ids)):
            scores, previous = (best[:, None] + log_transition).max(dim=0)  # (K,) over the state before
            best = scores + emissions[t]
            back.append(previous.to(torch.int16))  # K <= 32,768: a quarter of the memory of int64 for long texts
        path = [int(best.argmax())]
        for previous in reversed(back):
            path.append(int(previous[path[-1]]))
        return path[::-1], float(best.max())


def grown_state(state: dict, added: int) -> dict:
    """An HMM's weights for `added` new tokens at the end of the vocabulary (fine-tuning, train.init_from).

    Each new token gets <unk>'s emission logits minus ln(added): in every state the new tokens together
    take what <unk> had, and every old token keeps its odds against every other (all are scaled by the
    same 1 / (1 + p(<unk> | state))), as a full softmax grows in rnngen.training.finetune.
    """
    emission = state["emission_logits"]  # (V, K)
    new_rows = (emission[UNK_ID] - math.log(added)).expand(added, -1)
    return {**state, "emission_logits": torch.cat([emission, new_rows])}


def _float32(token_ids: torch.Tensor):
    """No autocast inside the recursion: the carried distribution stays float32 (see the module notes)."""
    if torch.is_autocast_enabled(token_ids.device.type):
        return torch.autocast(token_ids.device.type, enabled=False)
    return contextlib.nullcontext()

"""The Markov-chain baseline: a count-based n-gram model with interpolated Kneser-Ney smoothing.

An order-n model predicts each token from the n-1 tokens before it and nothing else; all it
knows is how often each n-gram occurred in the training text. It is built by one counting pass
(seconds), and its size grows with every extra token of context, which is the trade-off
`rnngen compare` puts next to the recurrent models.

Smoothing (interpolated Kneser-Ney with one discount D_m per order m, after Chen & Goodman 1998):

    p_m(w | h) = max(c_m(h w) - D_m, 0) / c_m(h .)  +  D_m * N_m(h .) / c_m(h .) * p_{m-1}(w | h')
    p_0(w)     = 1 / V

where h' is h without its oldest token, c_m(h .) the sum of c_m(h w) over w and N_m(h .) the
number of w with c_m(h w) > 0. At the highest order c_m counts occurrences; below it, c_m(g) is
the number of distinct tokens seen right before g (a continuation count: how many contexts g
completes, not how often). A context never seen (c_m(h .) = 0) hands all its mass to p_{m-1}.
D_m = n1 / (n1 + 2 n2) from the counts equal to 1 and 2 at that order (Ney, Essen & Kneser 1994).
Every token keeps a non-zero probability, so unseen text has a finite perplexity.

The training text is preceded by n-1 start markers (id V), so the first tokens are counted with
a context too, and a model started with no state predicts as at the start of a text.

Storage: every k-gram (k = 1..n) of the training text has an exact integer id, level by level:

    key(k-gram) = id(its first k-1 tokens) * (V + 1) + its last token
    id(k-gram)  = position of that key in the sorted keys of level k

so a level is one sorted int64 tensor and every lookup is a binary search. The keys of one
context are contiguous, so its whole next-token distribution is one slice. Beside the keys each
level stores alpha(h w) = max(c_m(h w) - D_m, 0) / c_m(h .) per gram and the back-off weight
D_m N_m(h .) / c_m(h .) per context (1 for a context without counts), so that
p_m(w | h) = alpha(h w) + backoff(h) * p_{m-1}(w | h'): one gather and one multiply-add per order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def count_ngrams(ids: torch.Tensor, vocab_size: int, order: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(sorted keys, Kneser-Ney counts) of every level k = 1..order of the token stream `ids` (N,)."""
    radix, start = vocab_size + 1, vocab_size
    stream = torch.cat([torch.full((order - 1,), start, dtype=torch.long), ids.long()])  # (L,)
    tables = []
    prefix_ids = torch.zeros(len(stream), dtype=torch.long)  # id of the (k-1)-gram starting at each position
    for level in range(1, order + 1):
        positions = len(stream) - level + 1
        keys = prefix_ids[:positions] * radix + stream[level - 1 : level - 1 + positions]  # (positions,)
        level_keys, gram_ids = torch.unique(keys, sorted=True, return_inverse=True)
        if level > 1:
            # continuation counts of the level below: each k-gram adds 1 to the (k-1)-gram it ends with
            suffix = torch.empty(len(level_keys), dtype=torch.long)
            suffix[gram_ids] = prefix_ids[1 : 1 + positions]
            tables[-1] = (tables[-1][0], torch.bincount(suffix, minlength=len(tables[-1][0])))
        tables.append((level_keys, torch.bincount(gram_ids, minlength=len(level_keys))))
        prefix_ids = gram_ids
    # a gram ending in the start marker is only ever a context: it predicts nothing
    return [(keys, torch.where(keys % radix == start, 0, counts).int()) for keys, counts in tables]


def searchsorted(table: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Insertion points of 1-D `values` in the sorted 1-D `table`.

    A performance workaround: on CPU, torch.searchsorted splits as few as 200 queries across
    threads, which costs milliseconds per call whenever the cores are busy; numpy's
    single-threaded search answers a window of queries in microseconds.
    """
    if table.device.type == "cpu":
        return torch.from_numpy(np.searchsorted(table.numpy(), values.contiguous().numpy()))
    return torch.searchsorted(table, values.contiguous())


def kneser_ney_discount(counts: torch.Tensor) -> float:
    """n1 / (n1 + 2 n2); 0.5 when no count is 1 (the estimate would be 0 and unseen tokens impossible)."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 else 0.5


class NgramLM(nn.Module):
    """An order-n Markov language model that looks to the sampler and evaluator like an RNNLM.

    `model(token_ids (B, T), state) -> (logits (B, T, V), state)`, where the logits are the exact
    log-probabilities. The state is the last order-2 input tokens (the input token itself completes
    the order-1 context), shaped (1, B, order-2) like an RNN's (layers, B, H) so the shared state
    helpers (rnngen.models.state, sample._repeat_state) apply unchanged. It has no
    parameters: everything it knows is in buffers.
    """

    def __init__(self, vocab_size: int, order: int, sizes: list[int], cell: str = "ngram"):
        super().__init__()
        self.vocab_size, self.order = vocab_size, order
        self.radix, self.start_id = vocab_size + 1, vocab_size
        self.history = max(order - 2, 0)
        context_sizes = [1, *sizes[:-1]]  # the contexts of order m are the grams of level m-1; level 0 is empty
        for level in range(1, order + 1):
            # the last slot of alpha and backoff answers index -1, "never seen": alpha 0, backoff 1
            self.register_buffer(f"keys_{level}", torch.zeros(sizes[level - 1], dtype=torch.long))
            self.register_buffer(f"alpha_{level}", torch.zeros(sizes[level - 1] + 1, dtype=torch.float64))
            self.register_buffer(f"backoff_{level}", torch.ones(context_sizes[level - 1] + 1, dtype=torch.float64))

    @classmethod
    def fit(cls, ids, vocab_size: int, order: int) -> NgramLM:
        """Count a training token stream (array-like of ids) into a model."""
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        tables = count_ngrams(ids, vocab_size, order)
        model = cls(vocab_size, order, [len(keys) for keys, _ in tables])
        for level, (keys, counts) in enumerate(tables, start=1):
            discount = kneser_ney_discount(counts)
            contexts = keys // model.radix  # (G,) id of each gram's context
            backoff = getattr(model, f"backoff_{level}")
            totals = torch.zeros(len(backoff) - 1, dtype=torch.float64).index_add_(0, contexts, counts.double())
            types = torch.zeros_like(totals).index_add_(0, contexts, (counts > 0).double())
            seen = totals > 0  # a context with no counts at this order hands all its mass down
            getattr(model, f"keys_{level}").copy_(keys)
            alpha = (counts.double() - discount).clamp(min=0) / totals.clamp(min=1)[contexts]
            getattr(model, f"alpha_{level}")[:-1] = alpha
            backoff[:-1] = torch.where(seen, discount * types / totals.clamp(min=1), 1.0)
        return model

    @property
    def stored_ngrams(self) -> int:
        return sum(len(getattr(self, f"keys_{level}")) for level in range(1, self.order + 1))

    def cost_per_token(self) -> int:
        """Multiply-adds to score a token (rnngen compare): one interpolation per order, after a table search each."""
        return self.order

    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        """Start markers: predictions begin as at the start of a text. (1, B, order-2)"""
        device = device or self.keys_1.device
        return torch.full((1, batch_size, self.history), self.start_id, dtype=torch.long, device=device)

    # ----------------------------------------------------------------------- lookups

    def _find(self, level: int, keys: torch.Tensor) -> torch.Tensor:
        """Ids of the grams with these keys at `level`; -1 where the gram was never seen."""
        table = getattr(self, f"keys_{level}")
        position = searchsorted(table, keys.reshape(-1)).view(keys.shape).clamp(max=len(table) - 1)
        return torch.where((keys >= 0) & (table[position] == keys), position, -1)

    def _contexts(self, window: torch.Tensor, steps: int) -> list[torch.Tensor]:
        """Context id (-1 if unseen) of each of the last `steps` predictions, for orders 1..n: (B, steps) each.

        window (B, W) holds the carried state and the inputs; the context of order m for the
        prediction after window[:, i] is the m-1 tokens ending at i.
        """
        width = window.size(1)
        gram_ids = torch.zeros_like(window)  # level 0: the empty gram at every position
        contexts = [gram_ids[:, width - steps :]]
        for level in range(1, self.order):
            positions = width - level + 1
            keys = gram_ids[:, :positions] * self.radix + window[:, level - 1 : level - 1 + positions]  # (B, positions)
            gram_ids = self._find(level, keys)
            contexts.append(gram_ids[:, positions - steps :])  # grams that end at the last `steps` positions
        return contexts

    def target_probs(self, contexts: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """p(target | context) for every position, float64, shaped like targets."""
        probs = torch.full(targets.shape, 1.0 / self.vocab_size, dtype=torch.float64, device=targets.device)
        for order in range(1, self.order + 1):
            alpha, backoff = getattr(self, f"alpha_{order}"), getattr(self, f"backoff_{order}")
            grams = self._find(order, contexts[order - 1] * self.radix + targets)  # -1: unseen, alpha 0
            probs = alpha[grams] + backoff[contexts[order - 1]] * probs
        return probs

    def distributions(self, contexts: list[torch.Tensor]) -> torch.Tensor:
        """Whole next-token distributions (N, V), float64, for flat context ids (N,) per order."""
        shape = (len(contexts[0]), self.vocab_size)
        probs = torch.full(shape, 1.0 / self.vocab_size, dtype=torch.float64, device=contexts[0].device)
        for order in range(1, self.order + 1):
            backoff = getattr(self, f"backoff_{order}")[contexts[order - 1]]  # (N,)
            probs = self._alpha_rows(order, contexts[order - 1]) + backoff[:, None] * probs
        return probs

    def _alpha_rows(self, order: int, contexts: torch.Tensor) -> torch.Tensor:
        """Dense alpha(h w) (N, V) of each row's context h: its grams are the keys in [h R, h R + R)."""
        keys, alpha = getattr(self, f"keys_{order}"), getattr(self, f"alpha_{order}")
        first = contexts * self.radix  # negative for an unseen context: an empty range
        lo, hi = searchsorted(keys, torch.cat([first, first + self.radix])).view(2, -1)  # (N,) each
        lengths = hi - lo
        row = torch.repeat_interleave(torch.arange(len(contexts), device=keys.device), lengths)  # (E,)
        entry = torch.arange(len(row), device=keys.device) + (lo - lengths.cumsum(0) + lengths)[row]  # (E,)
        dense = torch.zeros(len(contexts), self.radix, dtype=torch.float64, device=keys.device)
        dense[row, keys[entry] - first[row]] = alpha[entry]
        return dense[:, : self.vocab_size]

    # ----------------------------------------------------------------------- the RNNLM interface

    def _window(self, token_ids: torch.Tensor, state):
        """Carried state + inputs (B, order-2 + T), and the state to carry on (1, B, order-2)."""
        if state is None:
            state = self.initial_state(token_ids.size(0), token_ids.device)
        window = torch.cat([state[0], token_ids], dim=1)  # (B, H + T)
        return window, window[:, token_ids.size(1) :][None]

    def forward(self, token_ids: torch.Tensor, state=None):
        """token_ids (B, T) -> log-probabilities (B, T, V) of the next token, and the new state."""
        batch, steps = token_ids.shape
        window, state = self._window(token_ids, state)
        contexts = [c.reshape(-1) for c in self._contexts(window, steps)]  # (B*T,) per order
        probs = self.distributions(contexts).view(batch, steps, self.vocab_size)  # (B, T, V)
        return probs.log().float(), state

    def loss(self, token_ids: torch.Tensor, targets: torch.Tensor, state=None, reduction: str = "mean"):
        """Cross-entropy (nats per token) of `targets` (B, T): looks up only the targets, not whole rows."""
        window, state = self._window(token_ids, state)
        nll = -self.target_probs(self._contexts(window, token_ids.size(1)), targets).log().reshape(-1)  # (B*T,)
        if reduction == "sum":
            return nll.sum(), state
        return (nll.mean() if reduction == "mean" else nll), state


def ngram_args(vocab_size: int, order: int, sizes: list[int]) -> dict:
    """The checkpoint's model_args for an n-gram model: what rnngen.models.registry.build_model rebuilds it from."""
    return {"cell": "ngram", "vocab_size": vocab_size, "order": order, "sizes": list(sizes)}


def state_bytes(module: nn.Module) -> int:
    """Bytes of the tensors a model holds (weights or count tables), each shared tensor once."""
    tensors = {t.data_ptr(): t for t in module.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())

"""Adaptive softmax: an output layer for big vocabularies that costs a fraction of the full one.

Word counts follow Zipf's law, so a few thousand words make up most of any text. The vocabulary
(ids sorted by frequency, <unk> first) is cut at `cutoffs` into a head of frequent words and tail
clusters of rarer ones. The head scores its words plus one entry per cluster; a cluster scores
its own words, each from its own row, like a full softmax restricted to the cluster. Then

    p(w) = p_head(w)                     for a head word
    p(w) = p_head(cluster c) * p_c(w)    for a word of tail cluster c

which sums to 1 over the vocabulary. In training only the head and, at each position, the
target's own cluster are computed, so most positions pay for a small head matrix instead of
the full V x H one (Grave et al., 2017, "Efficient softmax approximation for GPUs").
`forward` gives the exact log-probabilities over the whole vocabulary, for sampling.

Where a cluster's rows come from:
  - tied (model.tie_weights; since issue 14): every word, head or tail, is
    scored by its own embedding row, `h_t . e_w + b_w`. Rare words learn from being read in as
    well as from being predicted, and the only approximation left is the split into clusters.
  - untied, and checkpoints written before tied tails existed: cluster c first projects h_t to a
    width DIV_VALUE^c times smaller, then scores its words from rows of that width. Cheaper to
    store, but a rare word's row is learned only from the few times it is the target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnngen.models import spelling

ADAPTIVE_FROM = 5_000  # model.output auto: adaptive from this many tokens of vocabulary (docs/embeddings.md)
DIV_VALUE = 4  # each tail cluster projects h_t to a width this many times smaller than the one before
MAX_HEAD_WORDS = 20_000


def default_cutoffs(vocab_size: int) -> list[int]:
    """The most frequent tenth of the vocabulary in the head (at most 20,000), then clusters 5x larger."""
    cutoffs = []
    edge = max(1, min(vocab_size // 10, MAX_HEAD_WORDS))
    while edge < vocab_size:
        cutoffs.append(edge)
        edge *= 5
    return cutoffs


class AdaptiveSoftmax(nn.Module):
    """hidden states (..., H) -> exact log p(token) over the vocabulary (..., V), or the NLL of targets."""

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: list[int], tied_tails: bool = False):
        super().__init__()
        self.edges = [0, *cutoffs, vocab_size]  # cluster c holds ids edges[c] .. edges[c+1]-1; cluster 0 = head
        self.shortlist = cutoffs[0]
        self.tied_tails = tied_tails
        clusters = len(cutoffs)
        # one row per head word (per word when the tails are tied); tie_weights points this at the embedding table
        rows = vocab_size if tied_tails else self.shortlist
        self.word_weight = nn.Parameter(torch.empty(rows, hidden_size).uniform_(-0.1, 0.1))
        self.cluster_weight = nn.Parameter(torch.empty(clusters, hidden_size).uniform_(-0.1, 0.1))
        self.bias = nn.Parameter(torch.zeros(self.shortlist + clusters))
        self.tails = nn.ModuleList()  # the projected tails' layers; empty when tied
        if tied_tails:
            self.tail_bias = nn.Parameter(torch.zeros(vocab_size - self.shortlist))  # b_w of every tail word
        else:
            for c in range(1, clusters + 1):
                width = max(1, hidden_size // DIV_VALUE**c)
                size = self.edges[c + 1] - self.edges[c]
                self.tails.append(nn.Sequential(nn.Linear(hidden_size, width, bias=False), nn.Linear(width, size)))
        self.register_buffer("cutoffs", torch.tensor(cutoffs), persistent=False)

    def head_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., S + C): log p of each head word, then of each tail cluster."""
        weight = torch.cat([self.word_rows(0, self.shortlist), self.cluster_weight])  # (S + C, H)
        return F.log_softmax(F.linear(hidden, weight, self.bias), dim=-1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V) exact log-probabilities; log_softmax leaves them unchanged, like logits."""
        head = self.head_log_probs(hidden)  # (..., S + C)
        pieces = [head[..., : self.shortlist]]
        for c in range(1, len(self.edges) - 1):
            in_cluster = head[..., self.shortlist + c - 1, None]  # (..., 1)
            pieces.append(in_cluster + F.log_softmax(self.tail_scores(c, hidden), dim=-1))  # (..., size of cluster)
        return torch.cat(pieces, dim=-1)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-log p(target) per position: hidden (N, H), targets (N,) -> (N,); each tail runs on its own rows only."""
        cluster = torch.bucketize(targets, self.cutoffs, right=True)  # (N,) 0 = head, c = tail cluster c
        head_target = torch.where(cluster == 0, targets, self.shortlist + cluster - 1)  # (N,)
        nll = -self.head_log_probs(hidden).gather(1, head_target[:, None]).squeeze(1)  # (N,)
        for c in range(1, len(self.edges) - 1):
            rows = (cluster == c).nonzero().squeeze(1)  # (n_c,) positions whose target is in cluster c
            if rows.numel() == 0:
                continue
            local = (targets[rows] - self.edges[c])[:, None]  # (n_c, 1) ids within the cluster
            tail_nll = -F.log_softmax(self.tail_scores(c, hidden[rows]), dim=-1).gather(1, local).squeeze(1)  # (n_c,)
            nll = nll.index_add(0, rows, tail_nll)
        return nll

    def tail_scores(self, c: int, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., size of cluster c): the unnormalised scores of tail cluster c's words."""
        if not self.tied_tails:
            return self.tails[c - 1](hidden)
        first, end = self.edges[c], self.edges[c + 1]
        bias = self.tail_bias[first - self.shortlist : end - self.shortlist]
        return F.linear(hidden, self.word_rows(first, end), bias)

    def word_rows(self, start: int, end: int) -> torch.Tensor:
        """The output rows of ids start..end-1 (a spelled embedding's composed rows when tied to one)."""
        return spelling.rows(self, "word_weight", start, end)

    def tie_to(self, embedding: nn.Module) -> None:
        """Score every word (head words only, before tied tails) by its embedding row."""
        spelling.tie(self, "word_weight", embedding)

"""Word vectors that share rows by spelling (model.spelling): "And" learns from "and", "lengthen'd" from "-'d".

At word level every token has its own embedding row, so "And" at the start of a verse line,
"and" inside it and "AND" in a heading share nothing, and the rows of rare forms are learned
from a handful of examples. With model.spelling the vector of word w is

    e_w = r_w + mean over f in F(w) of s_f

where r_w is the word's own row and F(w) its features, each with a shared row s_f:
  - its lower-case form ("L:and" for And, and, AND), which joins the case variants of a word;
  - its case shape ("C:lower", "C:Title", "C:UPPER", "C:mixed"): one direction for "a
    capitalised word comes next" (the start of a verse line, a speaker's name);
  - its last one, two and three letters ("S:d", "S:'d", "S:n'd" for lengthen'd), when the word
    is at least two letters longer: what endings say about a word ("-'d", "-eth", "-ly", "-s")
    is shared by every word with that ending, the rare ones included.
Only features that at least two words of the vocabulary have get a row (a feature of one word
would be a second copy of that word's own row). Tokens without a letter (punctuation, newlines,
<unk>) keep their own row alone. With tied weights the output layer scores each word by the same
e_w, so what "and" learns as a target helps "And" as a target too.

The table is composed from the two parameter tables once per forward pass (`composed_once`; an
embedding bag per word, so no pairs x D tensor is ever built), so gradients reach both. The features are plain lists of
integers in the checkpoint's model_args, so building the module needs nothing but those args.
"""

from __future__ import annotations

import contextlib
import copy
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from rnngen.data.vocab import UNK_ID

MAX_ENDING = 3  # letters of the longest ending that is a feature


def features(word: str) -> list[str]:
    """The spelling features of one token: none without a letter, else its lower-case form, case shape and endings."""
    if not any(ch.isalpha() for ch in word):
        return []
    low = word.lower()
    endings = [low[-k:] for k in range(1, MAX_ENDING + 1) if len(low) >= k + 2]  # an ending, not most of the word
    return ["L:" + low, "C:" + _shape(word), *("S:" + e for e in endings)]


def _shape(word: str) -> str:
    if word == word.lower():
        return "lower"
    if word == word.upper():
        return "UPPER"
    return "Title" if word[0].isupper() and word[1:] == word[1:].lower() else "mixed"


def model_args(tokens: list[str]) -> dict:
    """{"words": [...], "features": [...], "count": G}: pair k gives word words[k] the shared row features[k]."""
    per_word = [features(token) if i != UNK_ID else [] for i, token in enumerate(tokens)]
    shared = Counter(f for fs in per_word for f in fs)
    ids: dict[str, int] = {}
    words, rows = [], []
    for word, fs in enumerate(per_word):
        for f in fs:
            if shared[f] >= 2:
                words.append(word)
                rows.append(ids.setdefault(f, len(ids)))
    return {"words": words, "features": rows, "count": len(ids)}


class SpelledEmbedding(nn.Module):
    """token ids (B, T) -> e_w (B, T, D); `weight` is the composed V x D table, `rows(a, b)` a slice of it."""

    def __init__(self, vocab_size: int, dim: int, words: list[int], features: list[int], count: int):
        super().__init__()
        self.own = nn.Parameter(torch.empty(vocab_size, dim).uniform_(-0.1, 0.1))  # r_w
        self.shared = nn.Parameter(torch.empty(count, dim).uniform_(-0.1, 0.1))  # s_f
        words_t = torch.tensor(words, dtype=torch.long)  # sorted: model_args lists each word's pairs together
        per_word = torch.bincount(words_t, minlength=vocab_size)
        # word w's pairs are bag w: features[bounds[w] : bounds[w + 1]], each weighted 1 / (its word's features)
        self.register_buffer("bounds", torch.cat([torch.zeros(1, dtype=torch.long), per_word.cumsum(0)]), False)
        self.register_buffer("pair_feature", torch.tensor(features, dtype=torch.long), False)
        self.register_buffer("pair_weight", 1.0 / per_word.clamp(min=1)[words_t].float(), False)
        self.table = None  # the composed table while `composed_once` holds it (training: one forward pass)
        self._kept, self._kept_key = None, None  # without gradients: the table, and the weights it was composed from

    @property
    def weight(self) -> torch.Tensor:
        return self.rows(0, self.own.size(0))

    def rows(self, start: int, end: int) -> torch.Tensor:
        """e_w for ids start..end-1, (end - start, D): one weighted sum of shared rows per word (a bag)."""
        if self.table is not None:
            return self.table[start:end]
        if not torch.is_grad_enabled():  # sampling and scoring: composed once per change of the weights
            return self._table_without_grad()[start:end]
        return self._compose(start, end)

    def _table_without_grad(self) -> torch.Tensor:
        key = tuple((p.data_ptr(), p._version) for p in (self.own, self.shared))  # moved or updated: compose again
        if self._kept_key != key:
            self._kept, self._kept_key = self._compose(0, self.own.size(0)), key
        return self._kept

    def _compose(self, start: int, end: int) -> torch.Tensor:
        first, last = int(self.bounds[start]), int(self.bounds[end])
        shared = F.embedding_bag(
            self.pair_feature[first:last], self.shared, self.bounds[start:end] - first, mode="sum",
            per_sample_weights=self.pair_weight[first:last].to(self.shared.dtype),
        )  # fmt: skip
        return self.own[start:end] + shared.to(self.own.dtype)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.weight)


@contextlib.contextmanager
def composed_once(embedding: nn.Module):
    """Within one forward pass, compose a spelled table once for the input and the tied output layer."""
    if not isinstance(embedding, SpelledEmbedding):
        yield
        return
    embedding.table = embedding.weight
    try:
        yield
    finally:
        embedding.table = None


def tie(layer: nn.Module, name: str, embedding: nn.Module) -> None:
    """Make `layer.<name>` the embedding table: the same Parameter, or a spelled table's rows composed on each use."""
    if isinstance(embedding, SpelledEmbedding):
        delattr(layer, name)
        layer.rows_of = embedding.rows  # a bound method, not a submodule: the embedding stays one module
    else:
        setattr(layer, name, embedding.weight)


def rows(layer: nn.Module, name: str, start: int, end: int) -> torch.Tensor:
    """Rows start..end-1 of `layer.<name>`, or of the spelled table it was tied to."""
    rows_of = getattr(layer, "rows_of", None)
    return rows_of(start, end) if rows_of else getattr(layer, name)[start:end]


def plain_copy(model: nn.Module) -> nn.Module:
    """The model with a spelled embedding turned into a plain table of its composed rows, tied as before.

    For a graph export (rnngen.export), which runs a fixed table rather than composing one. The model
    itself is left as it is (the result is a copy); a model without a spelled table is returned unchanged.
    """
    if not isinstance(model.embedding, SpelledEmbedding):
        return model
    plain = copy.deepcopy(model)
    with torch.no_grad():
        table = nn.Embedding.from_pretrained(model.embedding.weight.detach().clone(), freeze=False)
    plain.embedding = table
    if hasattr(plain.head, "rows_of"):  # tied: score with the same composed rows
        del plain.head.rows_of
        plain.head.tie_to(table)
    return plain

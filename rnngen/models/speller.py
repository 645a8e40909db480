"""The speller: what an unknown word costs, letter by letter, for open-vocabulary bits per character.

A word model scores every word outside its vocabulary as the one token `<unk>`: "some rare word",
which is easier to predict than the word itself. To compare it honestly with character and
subword models, which pay for every character, each `<unk>` of the scored text also pays for its
spelling under a character model fitted on the training text:

    bits(w) = -log2 p_spell(c_1 ... c_n <end>)
            = -sum_i log2 p(c_i | the characters of w before c_i)

p_spell is the project's Kneser-Ney n-gram (rnngen.models.ngram) at character level, of order
ORDER, counted over the distinct tokens of the training text (each spelled once, from a start
context, and ended by an end mark): the spelling of a new word is modelled on the word types the
text has, not on how often the frequent ones repeat. A character the training text never had
gets the model's floor probability.
"""

from __future__ import annotations

import math

import torch

from rnngen.models.ngram import NgramLM

ORDER = 5
BATCH = 1024  # words scored together


class Speller:
    """p_spell over the characters of a list of word types."""

    def __init__(self, types: list[str], order: int = ORDER):
        self.chars = sorted({c for word in types for c in word})
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.unknown_char, self.end = len(self.chars), len(self.chars) + 1  # ids after the characters
        self.start = len(self.chars) + 2  # NgramLM's start marker: the id one past its vocabulary
        stream = []
        for word in types:  # each word from a fresh start context: order-1 start markers before it
            stream += [self.start] * (order - 1) + self._ids(word) + [self.end]
        self.model = NgramLM.fit(stream or [self.end], self.start, order)

    def _ids(self, word: str) -> list[int]:
        return [self.index.get(c, self.unknown_char) for c in word]

    @torch.no_grad()
    def bits(self, words: list[str]) -> list[float]:
        """-log2 p_spell of each word, its end mark included."""
        found = []
        for first in range(0, len(words), BATCH):
            found += self._batch_bits(words[first : first + BATCH])
        return found

    def _batch_bits(self, words: list[str]) -> list[float]:
        width = max(len(w) for w in words) + 1
        inputs = torch.full((len(words), width), self.end, dtype=torch.long)  # padding past each word's end
        targets = torch.full_like(inputs, self.end)
        for row, word in enumerate(words):
            ids = self._ids(word)
            inputs[row, : len(ids) + 1] = torch.tensor([self.start, *ids])  # the start predicts c_1
            targets[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        nats, _ = self.model.loss(inputs, targets, reduction="none")
        nats = nats.view(len(words), width)
        lengths = torch.tensor([len(w) + 1 for w in words])  # the characters and the end mark
        kept = torch.arange(width)[None, :] < lengths[:, None]
        return ((nats * kept).sum(1) / math.log(2)).tolist()

    def total_bits(self, counts: dict[str, int]) -> float:
        """The spelling bits of every occurrence: sum over words of count * bits(word)."""
        words = list(counts)
        return sum(counts[w] * b for w, b in zip(words, self.bits(words))) if words else 0.0

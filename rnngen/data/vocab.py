"""The vocabulary: token strings <-> integer ids, with <unk> for rare or unseen tokens."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from rnngen.data import tokens as tokenizing

UNK = "<unk>"
UNK_ID = 0


@dataclass
class Vocab:
    """Token list where index = id; id 0 is always <unk>. At subword level `tokenizer` is the BPE
    tokenizer's JSON text (every text splits into known tokens, so <unk> never comes from text)."""

    tokens: list[str]
    level: str
    lowercase: bool = False
    tokenizer: str | None = None
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.subword = tokenizing.Subword(self.tokenizer) if self.tokenizer else None

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, counts: dict[str, int], level: str, lowercase: bool = False, min_freq: int = 1, max_vocab=None):
        """Most frequent first, ties broken by the token itself, so the result is deterministic."""
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t != UNK), key=lambda t: (-counts[t], t))
        if max_vocab is not None:
            kept = kept[: max_vocab - 1]
        return cls([UNK, *kept], level, lowercase)

    def grow(self, counts: dict[str, int], min_freq: int = 1, max_vocab=None) -> Vocab:
        """This vocabulary plus the tokens of `counts` it lacks, appended: existing ids never change.

        New tokens are kept as Vocab.build keeps tokens (seen at least min_freq times, most frequent
        first), while the whole vocabulary stays within max_vocab; the existing tokens are never dropped.
        """
        new = Vocab.build({t: c for t, c in counts.items() if t not in self.index}, self.level, min_freq=min_freq)
        room = len(new) - 1 if max_vocab is None else max(max_vocab - len(self), 0)
        return Vocab([*self.tokens, *new.tokens[1 : 1 + room]], self.level, self.lowercase, self.subword)

    @classmethod
    def build_subword(cls, subword: tokenizing.Subword, counts: dict[str, int], lowercase: bool = False) -> Vocab:
        """Every token of the BPE tokenizer, seen or not (a seed may use any), most frequent first."""
        every = {t: counts.get(t, 0) for t in subword.vocabulary()}
        kept = sorted((t for t in every if t != UNK), key=lambda t: (-every[t], t))
        return cls([UNK, *kept], "subword", lowercase, subword.json)

    def split(self, text: str) -> list[str]:
        """Text -> token strings, with this vocabulary's level and tokenizer."""
        return self.split_with_ends(text)[0]

    def split_with_ends(self, text: str) -> tuple[list[str], list[int]]:
        """Text -> token strings and where each ends in the text (see tokens.predicted_chars)."""
        return tokenizing.split_with_ends(text, self.level, self.lowercase, self.subword)

    def join(self, tokens: list[str]) -> str:
        return tokenizing.join(tokens, self.level)

    def detokenizer(self):
        """A streaming detokenizer for sampled tokens: .piece(token) -> text, .flush()."""
        return tokenizing.make_detokenizer(self.level)

    def encode(self, tokens: list[str]) -> list[int]:
        get = self.index.get
        return [get(t, UNK_ID) for t in tokens]

    def decode(self, ids) -> list[str]:
        return [self.tokens[i] for i in ids]

    def unknown(self, tokens: list[str]) -> list[str]:
        """The tokens (in order, without repeats) that are not in the vocabulary."""
        seen = dict.fromkeys(t for t in tokens if t not in self.index)
        return list(seen)

    def nearest(self, token: str, n: int = 3) -> list[str]:
        """Known tokens that look most like `token`: its lowercase form first, then close spellings."""
        out = []
        for variant in (token.lower(), token.capitalize(), token.upper()):
            if variant != token and variant in self.index and variant not in out:
                out.append(variant)
        candidates = [t for t in self.tokens[1:] if t.strip()]
        out += [t for t in difflib.get_close_matches(token, candidates, n=n, cutoff=0.5) if t not in out]
        return out[:n]

    def to_dict(self) -> dict:
        extra = {"tokenizer": self.tokenizer} if self.tokenizer else {}
        return {"tokens": list(self.tokens), "level": self.level, "lowercase": self.lowercase, "unk": UNK, **extra}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        return cls(list(data["tokens"]), data["level"], bool(data.get("lowercase", False)), data.get("tokenizer"))

"""Tokenizers: text -> token strings, and token strings -> readable text.

char level: every character is a token, newline included; joining gives the text back exactly.

word level (Unicode-aware):
  - a word is a run of letters/digits, with inner hyphens or apostrophes kept ("don't", "well-known");
  - a number keeps its inner . or , ("3.14", "1,000");
  - every other visible character is a token of its own (punctuation, symbols);
  - CJK ideographs and kana are one token each (those scripts do not put spaces between words);
  - newlines are tokens, so line and paragraph shape survive; other white space is dropped.
Joining puts single spaces between tokens, except before closing punctuation, after opening
brackets and quotes, around newlines and between CJK characters. Re-splitting joined text gives
the same tokens back (the word-level round trip is exact at the token level).

subword level: byte-level BPE (Hugging Face `tokenizers`, learned from the training text at
prepare time). A token is a run of UTF-8 bytes, each byte written as one printable stand-in
character (GPT-2's mapping, which tokenizers' ByteLevel uses); spaces and newlines belong to the
tokens, so any text is covered and joining the bytes gives it back exactly.

Bits per character divide by the characters a model predicted: from the end of the first token
(context only) to the end of the last one, counted in the text as read (newlines normalised),
never in a re-joined token stream. predicted_chars is the one place that counts them.
"""

from __future__ import annotations

import codecs
import re

from rnngen.errors import UserError

_CJK = "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_LETTER = rf"[^\W_{_CJK}]"
_WORD_RE = re.compile(rf"\n|\d+(?:[.,]\d+)+|{_LETTER}+(?:[-'’]{_LETTER}+)*|[{_CJK}]|\S")
_CJK_CHAR_RE = re.compile(rf"[{_CJK}]")
_CJK_PUNCT_RE = re.compile("[\u3000-\u303f\uff00-\uffef]")

_NO_SPACE_BEFORE = frozenset(",.;:!?)]}%…»、。，．：；！？）」』】")
_NO_SPACE_AFTER = frozenset("([{¿¡«「『【")
_OPENING_QUOTES = frozenset("“‘")
_CLOSING_QUOTES = frozenset("”’")
_TOGGLE_QUOTES = frozenset("\"'`")


def split(text: str, level: str, lowercase: bool = False, subword: Subword | None = None) -> list[str]:
    """Cut text into tokens of the given level ("char", "word", or "subword" with its tokenizer)."""
    return split_with_ends(text, level, lowercase, subword)[0]


def split_with_ends(
    text: str, level: str, lowercase: bool = False, subword: Subword | None = None
) -> tuple[list[str], list[int]]:
    """The tokens of `text` and the character offset where each one ends."""
    if lowercase:
        text = text.lower()
    if level == "char":
        return list(text), list(range(1, len(text) + 1))
    if level == "subword":
        return subword.split_with_ends(text)
    found = list(_WORD_RE.finditer(text))
    return [m.group() for m in found], [m.end() for m in found]


def predicted_chars(ends, first: int = 0) -> int:
    """Characters a model predicts after token `first`: from the end of that token to the end of the last.

    `ends` are the tokens' end offsets (split_with_ends); bits per character divide by this.
    """
    return int(ends[-1] - ends[first]) if len(ends) > first + 1 else 0


def join(tokens: list[str], level: str) -> str:
    """Put tokens back together as readable text."""
    detokenizer = make_detokenizer(level)
    return "".join(detokenizer.piece(t) for t in tokens) + detokenizer.flush()


def rules(level: str) -> dict:
    """How a level cuts text into tokens and joins them again, as plain data: for programs that tokenize and
    detokenize without rnngen (`rnngen export`). The patterns are Python regular expressions."""
    if level == "char":
        return {"split": "every character is a token", "join": "concatenate"}
    if level == "subword":  # the BPE merges themselves are the vocabulary's tokenizer JSON
        return {"split": "byte-level BPE (the tokenizer JSON)",
                "join": "each character of a token stands for the byte byte_of gives; the bytes are UTF-8",
                "byte_of": BYTE_OF}  # fmt: skip
    return {
        "split": "every match of pattern", "pattern": _WORD_RE.pattern,
        "join": "a space between tokens, except as the rules below say (rnngen.data.tokens.Detokenizer)",
        "no_space_before": sorted(_NO_SPACE_BEFORE), "no_space_after": sorted(_NO_SPACE_AFTER),
        "opening_quotes": sorted(_OPENING_QUOTES), "closing_quotes": sorted(_CLOSING_QUOTES),
        "toggle_quotes": sorted(_TOGGLE_QUOTES), "cjk_char": _CJK_CHAR_RE.pattern, "cjk_punct": _CJK_PUNCT_RE.pattern,
    }  # fmt: skip


def make_detokenizer(level: str):
    """The streaming detokenizer of a level: .piece(token) -> text, .flush() -> what is held back."""
    return {"char": CharDetokenizer, "word": Detokenizer, "subword": ByteDetokenizer}[level]()


class CharDetokenizer:
    """Characters are their own text."""

    def piece(self, token: str) -> str:
        return token

    def flush(self) -> str:
        return ""


def _byte_stand_ins() -> dict[str, int]:
    """Stand-in character -> byte: printable Latin-1 bytes stand for themselves, the other 68 bytes
    for the characters from U+0100 on, in byte order (GPT-2's byte-level alphabet)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


BYTE_OF = _byte_stand_ins()


def token_bytes(token: str) -> bytes:
    """The UTF-8 bytes a byte-level token stands for (any other character as its own UTF-8)."""
    return b"".join(bytes([BYTE_OF[c]]) if c in BYTE_OF else c.encode("utf-8") for c in token)


class ByteDetokenizer:
    """Byte-level tokens -> text, holding back a character whose bytes are not all there yet."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def piece(self, token: str) -> str:
        return self.decoder.decode(token_bytes(token))

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


class Subword:
    """A byte-level BPE tokenizer, kept as its JSON text (plain data in checkpoints and vocab.json)."""

    def __init__(self, json_text: str):
        self.json = json_text
        self._tokenizer = None

    @classmethod
    def train(cls, texts, vocab_size: int) -> Subword:
        """Learn byte-level BPE merges from an iterator of texts, up to vocab_size tokens (256 bytes included)."""
        tokenizers = require_tokenizers()
        tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
        tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tokenizer.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer.to_str())

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = require_tokenizers().Tokenizer.from_str(self.json)
        return self._tokenizer

    def vocabulary(self) -> list[str]:
        """Every token of the tokenizer, in id order."""
        return [t for t, _ in sorted(self.tokenizer.get_vocab().items(), key=lambda item: item[1])]

    def split_with_ends(self, text: str) -> tuple[list[str], list[int]]:
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        return encoding.tokens, [end for _, end in encoding.offsets]


def require_tokenizers():
    """The `tokenizers` package, or a clear error saying how to install it."""
    try:
        import tokenizers
        import tokenizers.decoders
        import tokenizers.models
        import tokenizers.pre_tokenizers
        import tokenizers.trainers
    except ImportError:
        raise UserError(
            "data.level: subword needs the Hugging Face `tokenizers` package; "
            "install it with `pip install 'rnngen[subword]'` (or `pip install tokenizers`), or use level char or word"
        ) from None
    return tokenizers


def _is_cjk(token: str) -> bool:
    """A CJK character or CJK punctuation mark: no spaces around it (full-width letters excluded)."""
    if len(token) != 1:
        return False
    return bool(_CJK_CHAR_RE.match(token)) or (bool(_CJK_PUNCT_RE.match(token)) and not token.isalnum())


class Detokenizer:
    """Turns a stream of word tokens into text one piece at a time (used while sampling)."""

    def flush(self) -> str:
        return ""

    def __init__(self) -> None:
        self.previous: str | None = None
        self.open_quotes: set[str] = set()
        self.glue_next = False  # the previous token was an opening quote or bracket

    def piece(self, token: str) -> str:
        previous, glue = self.previous, self.glue_next
        self.previous, self.glue_next = token, False
        if token == "\n":
            self.open_quotes.clear()
            return "\n"
        if token in _TOGGLE_QUOTES:
            if token in self.open_quotes:  # closing: sticks to what came before
                self.open_quotes.discard(token)
                return token
            self.open_quotes.add(token)
            self.glue_next = True
            return token if previous in (None, "\n") or glue or _is_cjk(previous or "") else " " + token
        if token in _OPENING_QUOTES or token in _NO_SPACE_AFTER:
            self.glue_next = True
        space = not (
            previous in (None, "\n")
            or glue
            or token in _NO_SPACE_BEFORE
            or token in _CLOSING_QUOTES
            or _is_cjk(token)
            or _is_cjk(previous)
        )
        return " " + token if space else token

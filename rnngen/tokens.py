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
"""

from __future__ import annotations

import re

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


def split(text: str, level: str, lowercase: bool = False) -> list[str]:
    """Cut text into tokens of the given level ("char" or "word")."""
    if lowercase:
        text = text.lower()
    if level == "char":
        return list(text)
    return _WORD_RE.findall(text)


def join(tokens: list[str], level: str) -> str:
    """Put tokens back together as readable text."""
    if level == "char":
        return "".join(tokens)
    detokenizer = Detokenizer()
    return "".join(detokenizer.piece(t) for t in tokens)


def _is_cjk(token: str) -> bool:
    """A CJK character or CJK punctuation mark: no spaces around it (full-width letters excluded)."""
    if len(token) != 1:
        return False
    return bool(_CJK_CHAR_RE.match(token)) or (bool(_CJK_PUNCT_RE.match(token)) and not token.isalnum())


class Detokenizer:
    """Turns a stream of word tokens into text one piece at a time (used while sampling)."""

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

"""Pre-trained word vectors (GloVe, word2vec) -> the model's embedding table, with a coverage report.

Formats, told apart by the first line (a name ending in .gz is decompressed on the fly):

    GloVe text        every line: word v1 v2 ... vD
    word2vec text     a header "count D", then lines as in GloVe (fastText .vec files too)
    word2vec binary   the same header, then per word: the word, a space, D little-endian float32s

The file is read as a stream and only the vectors of vocabulary words are kept, so a GloVe file of
several GB costs the memory of the vocabulary's vectors, not of the file. A vocabulary word takes
the vector of the same word if the file has it (case-sensitive); failing that, of the first word in
the file equal to it ignoring case (files list frequent words first, so that is the commonest
casing). Words without a vector keep their random initial vector, which stays fixed as well when
model.embeddings_freeze is on.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rnngen import console
from rnngen.data.vocab import UNK_ID
from rnngen.errors import ConfigError

KEY = "model.embeddings_path"
READ_CHUNK = 1 << 20  # bytes read at a time from binary files
MISSING_SHOWN = 8


@dataclass
class Coverage:
    """How many vocabulary words got a pre-trained vector: reported when training starts and by `info`."""

    path: str
    format: str
    dim: int
    words: int  # vocabulary words looked up (all but <unk>)
    exact: int  # found as they are
    ignoring_case: int  # found only in another casing
    missing: list[str] = field(default_factory=list)  # the most frequent words without a vector
    frozen: bool = False

    @property
    def found(self) -> int:
        return self.exact + self.ignoring_case

    def to_dict(self) -> dict:
        return asdict(self)


def describe(coverage: dict) -> str:
    """One line for stderr and `rnngen info`."""
    c = Coverage(**coverage)
    share = c.found / max(c.words, 1)
    text = (
        f"{c.found:,} of {c.words:,} vocabulary words ({share:.1%}) have a pre-trained vector from "
        f"{Path(c.path).name} ({c.format}, {c.dim}-d): {c.exact:,} exact, {c.ignoring_case:,} ignoring case"
    )
    if c.frozen:
        text += "; frozen"
    if c.missing:
        text += "; none for " + ", ".join(repr(w) for w in c.missing)
    return text


def load_pretrained(model, model_config, vocab) -> dict | None:
    """Fill the embedding table from model.embeddings_path when a run starts; returns the coverage dict."""
    path = model_config.embeddings_path
    if not path:
        return None
    table = model.embedding.weight  # (V, E)
    vectors, coverage = read_vectors(path, vocab.tokens, table.shape[1])
    if vectors:
        rows = torch.tensor(list(vectors), dtype=torch.long, device=table.device)
        values = torch.from_numpy(np.stack(list(vectors.values())))  # (found, E)
        with torch.no_grad():
            table[rows] = values.to(device=table.device, dtype=table.dtype)
    coverage.frozen = model_config.embeddings_freeze
    console.info(describe(coverage.to_dict()))
    if coverage.found < coverage.words / 2:
        console.warn(
            f"fewer than half of the vocabulary's words have a vector in {path}; is it the text's language, "
            "and the same tokenization (e.g. data.lowercase)?"
        )
    return coverage.to_dict()


def read_vectors(path: str, tokens: list[str], dim: int) -> tuple[dict[int, np.ndarray], Coverage]:
    """Stream the file; {token id: vector (dim,)} for every vocabulary token found, and the coverage."""
    wanted = {token: i for i, token in enumerate(tokens) if i != UNK_ID}
    by_folded_case: dict[str, list[int]] = {}
    for token, i in wanted.items():
        by_folded_case.setdefault(token.lower(), []).append(i)
    exact: dict[int, np.ndarray] = {}
    other_case: dict[int, np.ndarray] = {}
    with _open(path) as f:
        file_format, file_dim = _sniff(f, path)
        if file_dim != dim:
            raise ConfigError(
                f"{KEY}: {path} holds {file_dim}-dimensional vectors but model.embedding_dim is {dim}; "
                f"set model.embedding_dim: {file_dim} (or use vectors of size {dim})"
            )
        to_vector = _binary_vector if file_format == "word2vec binary" else _text_vector
        records = _binary_records(f, path, dim) if file_format == "word2vec binary" else _text_records(f)
        for word_bytes, payload in _guarded(records, path):
            word = word_bytes.decode("utf-8", "replace")
            i = wanted.get(word)
            if i is not None and i not in exact:
                vector = to_vector(payload, dim)
                if vector is None:
                    continue
                exact[i] = vector
            lacking = [j for j in by_folded_case.get(word.lower(), ()) if j not in other_case]
            vector = to_vector(payload, dim) if lacking else None
            if vector is not None:
                other_case.update(dict.fromkeys(lacking, vector))
            if len(exact) == len(wanted):
                break
    vectors = {**other_case, **exact}  # an exact match wins over another casing
    broken = [tokens[i] for i, vector in vectors.items() if not np.isfinite(vector).all()]
    if broken:
        raise ConfigError(f"{KEY}: {path} is damaged: the vector of {broken[0]!r} holds a non-finite number")
    coverage = Coverage(
        path=str(path),
        format=file_format,
        dim=file_dim,
        words=len(wanted),
        exact=len(exact),
        ignoring_case=len(vectors) - len(exact),
        missing=[t for t, i in wanted.items() if i not in vectors][:MISSING_SHOWN],
    )
    return dict(sorted(vectors.items())), coverage


# --------------------------------------------------------------------------- file formats


def _open(path: str):
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{KEY}: {path} does not exist or is not a file; give the path of a vector file")
    if file.suffix == ".zip":
        raise ConfigError(f"{KEY}: {path} is a zip archive; unzip it and give the path of the .txt file inside")
    try:
        return gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb")
    except OSError as e:
        raise ConfigError(f"{KEY}: cannot read {path}: {e}") from None


def _sniff(f, path: str) -> tuple[str, int]:
    """(format, vector size) from the start of the file; leaves `f` at the first vector."""
    try:
        first = f.readline()
    except OSError as e:  # e.g. a .gz name on a file that is not gzip
        raise ConfigError(f"{KEY}: cannot read {path}: {e}") from None
    fields = first.split()
    if len(fields) == 2 and all(x.isdigit() for x in fields):  # word2vec header: word count, vector size
        dim = int(fields[1])
        start = f.tell()
        is_text = _text_vector(_after_word(f.readline()), dim) is not None
        f.seek(start)
        return ("word2vec text" if is_text else "word2vec binary"), dim
    if len(fields) < 2 or _text_vector(_after_word(first), len(fields) - 1) is None:
        raise ConfigError(
            f"{KEY}: {path} is not a word-vector file (expected GloVe text, or word2vec text or binary); "
            f"it starts with {first[:60]!r}"
        )
    f.seek(0)
    return "GloVe text", len(fields) - 1


def _guarded(records: Iterator, path: str) -> Iterator:
    """The records; a read failure part-way (a cut-off .gz, damaged compressed data) names the file."""
    try:
        yield from records
    except (OSError, EOFError, zlib.error) as e:
        raise ConfigError(f"{KEY}: {path} is damaged or cut short ({e}); download or unpack it again") from None


def _after_word(line: bytes) -> bytes:
    parts = line.split(None, 1)
    return parts[1] if len(parts) == 2 else b""


def _text_records(f) -> Iterator[tuple[bytes, bytes]]:
    """(word, the rest of the line) per line."""
    for line in f:
        parts = line.split(None, 1)
        if len(parts) == 2:
            yield parts[0], parts[1]


def _text_vector(rest: bytes, dim: int) -> np.ndarray | None:
    """The numbers after a word; None when they are not `dim` numbers (e.g. a GloVe entry with spaces in the word)."""
    values = rest.split()
    if len(values) != dim:
        return None
    try:
        return np.array(values, dtype=np.float32)
    except ValueError:
        return None


def _binary_records(f, path: str, dim: int) -> Iterator[tuple[bytes, memoryview]]:
    """(word, the vector's bytes) per record, reading the file in large chunks."""
    size = 4 * dim
    buffer, pos = b"", 0
    while True:
        space = buffer.find(b" ", pos)
        if space < 0 or len(buffer) - (space + 1) < size:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                if buffer[pos:].strip():
                    raise ConfigError(f"{KEY}: {path} ends in the middle of a vector; the file is truncated")
                return
            buffer, pos = buffer[pos:] + chunk, 0
            continue
        yield buffer[pos:space].lstrip(b"\n"), memoryview(buffer)[space + 1 : space + 1 + size]
        pos = space + 1 + size


def _binary_vector(payload: memoryview, dim: int) -> np.ndarray:
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)

"""Prepare data: sources -> tokens -> vocabulary -> token ids on disk, streaming.

Layout of a prepared directory:

    vocab.json      the vocabulary, one token per line with its count (id = position)
    tokenizer.json  subword level only: the byte-level BPE tokenizer learned from the text
    unknown.json    the words behind <unk>: the distinct ones of the training split and the count of each
                    in the validation split (open-vocabulary bits per character spell them)
    train.bin       training token ids, flat little-endian uint16 (int32 above 65,535 tokens)
    val.bin         validation token ids: the LAST val_fraction of the text, contiguous
    meta.json       sources (size, mtime, sha256), tokenizer settings, counts, dtype, and the size and
                    CRC-32 of every other file (computed while writing), with a CRC-32 of itself

meta.json's counts hold train_chars and val_chars, the characters of the text each split's
tokens after its first predict (tokens.predicted_chars): bits per character divide by them.

Pass 1 tokenizes the text chunk by chunk, gives every distinct token a provisional id in order
of first appearance and writes those ids to a temporary file; memory holds only the distinct
tokens. Pass 2 maps provisional ids to final ids (frequency order) with one table lookup per
chunk and splits the stream into train and val. The text itself is never held whole. At
subword level a pass 0 learns the BPE tokenizer from the text first.

Every reader opens the directory through open_prepared, which checks each file against meta.json
(sizes always, checksums where recorded) before a byte is used. `prepare` and `train` rebuild a
damaged directory from the sources; `evaluate` and `sample --report-copying` do too when the
sources are still there (load_or_repair), and otherwise name the damaged file.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnngen import console
from rnngen.config import Config
from rnngen.data import tokens
from rnngen.data.sources import DEMO_NAME, STDIN_NAME, Source, demo_text, expand, file_sha256, read_text
from rnngen.data.vocab import UNK, Vocab
from rnngen.errors import DataError
from rnngen.fileio import atomic_path, crc32, file_crc32, make_dir, write_bytes, write_json
from rnngen.runs import source_checkpoint

FORMAT_VERSION = 3  # 2: val_chars counts the characters of the text; 3: unknown.json
ID_CHUNK = 1 << 22  # token ids handled per step of pass 2
PARALLEL_MIN_BYTES = 32 << 20  # inputs above this are tokenized by several processes
MAX_WORKERS = 4
IN_FLIGHT = 2  # chunks queued per worker
ID_DTYPES = ("uint16", "int32")
TOKENIZER_FILE = "tokenizer.json"
UNKNOWN_FILE = "unknown.json"


class PreparedDamaged(DataError):
    """A prepared directory is missing a file or holds a damaged one; the message names it."""


@dataclass
class Prepared:
    """A prepared-data directory, opened: the vocabulary, the metadata and the id files."""

    directory: Path
    meta: dict
    vocab: Vocab

    def ids(self, split: str) -> np.ndarray:
        """Memory-mapped token ids of "train" or "val" (nothing is read until it is used)."""
        count = self.meta["counts"][f"{split}_tokens"]
        return np.memmap(self.directory / f"{split}.bin", dtype=self.meta["dtype"], mode="r", shape=(count,))

    @property
    def val_chars(self) -> int:
        return self.meta["counts"]["val_chars"]

    def checksum(self, split: str) -> int | None:
        """CRC-32 of a split's id file as recorded in meta.json (None for data prepared before it was)."""
        return self.meta.get("files", {}).get(f"{split}.bin", {}).get("crc32")

    def unknown_words(self) -> dict:
        """unknown.json: {"train_types": [...], "val_counts": {word: count}} (checked when the directory opened)."""
        return json.loads((self.directory / UNKNOWN_FILE).read_bytes().decode("utf-8"))

    def training_types(self) -> list[str]:
        """Every distinct token of the training split as text: the vocabulary's that occur in it, then the words
        it has behind <unk>. What the speller of open-vocabulary bits per character learns spelling from."""
        present = _bincount(self.ids("train"), 0, self.meta["counts"]["train_tokens"], len(self.vocab))
        known = [token for token, n in zip(self.vocab.tokens, present.tolist()) if n and token != UNK]
        return known + self.unknown_words()["train_types"]


@dataclass
class BaseVocab:
    """The vocabulary of another run that a new vocabulary starts from: kept exactly, or grown."""

    vocab: Vocab
    key: str  # the config key that named it
    path: Path
    keep: bool  # data.vocab_from: exactly this vocabulary; train.init_from: it plus the new text's tokens

    def fingerprint(self) -> dict:
        """What the prepared data depends on: the tokens themselves, not where the checkpoint lies."""
        digest = hashlib.sha256("\n".join(self.vocab.tokens).encode("utf-8", "surrogatepass")).hexdigest()
        return {"sha256": digest, "size": len(self.vocab), "keep": self.keep}


def base_vocab(config: Config, source: dict | None = None) -> BaseVocab | None:
    """data.vocab_from's vocabulary (kept exactly), else train.init_from's (grown), else None.

    `source` is train.init_from's checkpoint when the caller has read it already (a fine-tuning run).
    """
    key = "data.vocab_from" if config.data.vocab_from else "train.init_from" if config.train.init_from else None
    if key is None:
        return None
    from rnngen import checkpoint  # torch: only when another run's vocabulary is needed

    path = source_checkpoint(config.data.vocab_from or config.train.init_from, key)
    if source is None or key != "train.init_from":
        source = checkpoint.load(path)
    vocab = Vocab.from_dict(source[checkpoint.VOCAB])
    d = config.data
    if (vocab.level, vocab.lowercase) != (d.level, d.lowercase):
        raise DataError(
            f"{key}: {path} was trained at {vocab.level} level (lowercase {str(vocab.lowercase).lower()}), but this "
            f"config has data.level {d.level} (lowercase {str(d.lowercase).lower()}); set data.level: {vocab.level} "
            f"and data.lowercase: {str(vocab.lowercase).lower()}, so the text is cut into tokens the same way"
        )
    return BaseVocab(vocab, key, path, keep=key == "data.vocab_from")


def _settings(config: Config, base: BaseVocab | None) -> dict:
    d = config.data
    settings = {
        "level": d.level,
        "lowercase": d.lowercase,
        "min_freq": d.min_freq,
        "max_vocab": d.max_vocab,
        "val_fraction": d.val_fraction,
        "errors": d.errors,
        **({"vocab_size": d.vocab_size} if d.level == "subword" else {}),
    }
    if base is not None:  # a changed source vocabulary makes the prepared data stale
        settings["base_vocab"] = base.fingerprint()
    return settings


def prepare(config: Config, force: bool = False, source: dict | None = None) -> Prepared:
    """Return the prepared data for `config`, building it only when missing or stale.

    `source`: train.init_from's checkpoint, already read by a fine-tuning run (its vocabulary is grown).
    """
    sources = expand(config.data.path)
    out_dir = config.prepared_dir()
    base = base_vocab(config, source)
    if not force:
        existing = _load_if_fresh(out_dir, sources, _settings(config, base))
        if existing is not None:
            console.detail(f"prepared data in {out_dir} is up to date; reusing it")
            return existing
    return _build(config, sources, out_dir, base)


def load_or_repair(config: Config, needed_for: str) -> Prepared:
    """The config's prepared data, checked; if it is missing or damaged, prepared again from its sources."""
    directory = config.prepared_dir()
    try:
        return open_prepared(directory)
    except PreparedDamaged as damage:
        try:
            sources = expand(config.data.path)
        except DataError:
            sources = []
        if not sources or any(s.name == STDIN_NAME for s in sources):
            paths = config.data.path if isinstance(config.data.path, (list, tuple)) else [config.data.path]
            raise DataError(
                f"{damage}; {needed_for} needs it, and its sources ({', '.join(map(str, paths))}) are not there to "
                "prepare it again: restore them (or the prepared data)"
            ) from None
        console.warn(f"{damage}; preparing it again from the sources")
        return _build(config, sources, directory, base_vocab(config))


def open_prepared(directory: str | Path) -> Prepared:
    """Open a prepared directory, checking every file against meta.json before use (PreparedDamaged if not)."""
    directory = Path(directory)
    meta = _read_meta(directory)
    for name, recorded in meta.get("files", {}).items():
        _check_file(directory / name, recorded)
    for split in ("train", "val"):
        path = directory / f"{split}.bin"
        expected = meta["counts"][f"{split}_tokens"] * np.dtype(meta["dtype"]).itemsize
        size = path.stat().st_size if path.is_file() else None
        if size != expected:
            raise PreparedDamaged(
                f"{path} is {'missing' if size is None else f'{size:,} bytes'}, meta.json records {expected:,}"
            )
    return Prepared(directory, meta, _read_vocab(directory / "vocab.json", meta))


def _read_meta(directory: Path) -> dict:
    path = directory / "meta.json"
    if not path.is_file():
        raise PreparedDamaged(f"prepared data in {directory} is missing or incomplete (no meta.json)")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise PreparedDamaged(f"{path} is damaged ({type(e).__name__}: {str(e)[:120]})") from None
    problem = _meta_problem(meta)
    if problem:
        raise PreparedDamaged(f"{path} {problem}")
    return meta


def _meta_problem(meta) -> str | None:
    if not isinstance(meta, dict):
        return "is damaged: not a JSON object"
    if meta.get("format_version") != FORMAT_VERSION:
        return f"was written by another rnngen (format {meta.get('format_version')!r}, this one reads {FORMAT_VERSION})"
    if "checksum" in meta and meta["checksum"] != _meta_checksum(meta):
        return "is damaged: its contents do not match the checksum written with it"
    counts = meta.get("counts")
    keys = ("train_tokens", "val_tokens", "val_chars", "vocab_size")
    if not isinstance(counts, dict) or not all(type(counts.get(k)) is int and counts[k] >= 0 for k in keys):
        return "is damaged: its token counts are missing or not numbers"
    if meta.get("dtype") not in ID_DTYPES or not isinstance(meta.get("files", {}), dict):
        return "is damaged: its dtype or file list is not one rnngen writes"
    return None


def _meta_checksum(meta: dict) -> int:
    rest = {k: v for k, v in meta.items() if k != "checksum"}
    return crc32(json.dumps(rest, sort_keys=True).encode("ascii"))


def _check_file(path: Path, recorded) -> None:
    """The file has the size and CRC-32 that meta.json recorded when it was written."""
    if not isinstance(recorded, dict) or not path.is_file():
        raise PreparedDamaged(f"{path} is missing (meta.json lists it)")
    size = path.stat().st_size
    if size != recorded.get("bytes"):
        raise PreparedDamaged(
            f"{path} is {size:,} bytes, meta.json records {recorded.get('bytes')!r}: it was cut short or replaced"
        )
    if file_crc32(path) != recorded.get("crc32"):
        raise PreparedDamaged(f"{path} is damaged: its checksum differs from the one meta.json recorded")


def _read_vocab(path: Path, meta: dict) -> Vocab:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        tokens = [token for token, _count in data["tokens"]]
        tokenizer = (path.parent / TOKENIZER_FILE).read_text(encoding="utf-8") if data["level"] == "subword" else None
        vocab = Vocab(tokens, data["level"], data["lowercase"], tokenizer)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PreparedDamaged(f"{path} is missing or damaged ({type(e).__name__}: {str(e)[:120]})") from None
    plain = all(isinstance(t, str) for t in tokens) and isinstance(vocab.level, str)
    if (
        not plain
        or len(vocab.index) != len(tokens)
        or len(tokens) != meta["counts"]["vocab_size"]
        or tokens[:1] != [UNK]
    ):
        raise PreparedDamaged(
            f"{path} is damaged: it is not the {meta['counts']['vocab_size']:,}-token vocabulary meta.json records"
        )
    return vocab


def _load_if_fresh(out_dir: Path, sources: list[Source], settings: dict) -> Prepared | None:
    """The prepared data if it is whole and made from these sources with these settings, else None (prepare again)."""
    if not (out_dir / "meta.json").exists():
        return None
    try:
        prepared = open_prepared(out_dir)
    except PreparedDamaged as damage:
        console.warn(f"{damage}; preparing it again")
        return None
    return prepared if _same_inputs(prepared.meta, sources, settings) else None


def _same_inputs(meta: dict, sources: list[Source], settings: dict) -> bool:
    if meta.get("settings") != settings:
        return False
    recorded = meta.get("sources", [])
    try:
        if [s["name"] for s in recorded] != [s.name for s in sources]:
            return False
        for old, new in zip(recorded, sources):
            if new.name == STDIN_NAME:
                return False  # stdin cannot be checked without reading it: always prepare again
            if new.name == DEMO_NAME:
                if old["sha256"] != hashlib.sha256(demo_text().encode("utf-8")).hexdigest():
                    return False
            elif old["size"] != new.size or (
                old["mtime_ns"] != new.mtime_ns and old["sha256"] != file_sha256(new.name)
            ):
                return False
    except (KeyError, TypeError):  # a hand-edited meta.json from before checksums: prepare again
        return False
    return True


def _word_pieces(chunks, carry_limit: int = 1 << 20, space_leads: bool = False):
    """Re-cut text chunks at white space so no word is split between two chunks.

    space_leads: the white space starts the next piece (byte-level BPE glues a space to the word after it).
    """
    carry = ""
    for chunk in chunks:
        text = carry + chunk
        cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
        if cut < 0 and len(text) < carry_limit:
            carry = text
            continue
        if cut < 0:  # one enormous word: cutting it is better than holding it
            cut = len(text) - 1
        cut += 0 if space_leads and cut > 0 else 1
        carry = text[cut:]
        yield text[:cut]
    if carry:
        yield carry


def _tokenize_chunk(text: str, level: str, lowercase: bool, subword=None):
    """One chunk -> (characters, bytes, its distinct tokens in order of appearance, local ids, token ends).

    Token ends (character offsets in the chunk) are left out (None) at char level, where token i ends at i + 1.
    """
    found, ends = tokens.split_with_ends(text, level, lowercase, subword)
    local = {token: i for i, token in enumerate(dict.fromkeys(found))}
    local_ids = np.array(list(map(local.__getitem__, found)), dtype=np.int32)
    ends = None if level == "char" else np.array(ends, dtype=np.int64)
    return len(text), len(text.encode("utf-8", "surrogatepass")), list(local), local_ids, ends


def _tokenized(pieces, level: str, lowercase: bool, parallel: bool, subword=None):
    """Tokenize chunks in order; large inputs use one worker process per core (at most IN_FLIGHT queued)."""
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if subword or not parallel or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for text in pieces:  # (the BPE tokenizer runs its own threads: it is never forked)
            yield _tokenize_chunk(text, level, lowercase, subword)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for text in pieces:
            pending.append(pool.apply_async(_tokenize_chunk, (text, level, lowercase)))
            if len(pending) >= IN_FLIGHT * workers:  # bounded: the text is never all in memory
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _build(config: Config, sources: list[Source], out_dir: Path, base: BaseVocab | None) -> Prepared:
    data = config.data
    make_dir(out_dir, "data.prepared_dir (--out)")
    subword = _learn_subword(config, sources) if data.level == "subword" else None
    index: dict[str, int] = {}
    total_tokens = 0
    total_chars = 0
    known_size = all(s.is_file for s in sources)
    bar = console.progress(
        total=sum(s.size for s in sources) if known_size else None, unit="B", unit_scale=True, desc="prepare"
    )
    console.info(f"preparing {len(sources)} source(s) at {data.level} level into {out_dir}")
    provisional_path, ends_path = _temporary(out_dir, ".provisional-"), _temporary(out_dir, ".ends-")
    try:
        with open(provisional_path, "wb") as provisional, open(ends_path, "wb") as ends_file:
            for source in sources:
                chunks = read_text(source, data.errors)
                pieces = chunks if data.level == "char" else _word_pieces(chunks, space_leads=subword is not None)
                parallel = known_size and source.size > PARALLEL_MIN_BYTES
                for chars, chunk_bytes, uniques, local_ids, ends in _tokenized(
                    pieces, data.level, data.lowercase, parallel, subword
                ):
                    if ends is not None:  # where each token ends in the whole text
                        (ends + total_chars).tofile(ends_file)
                    total_chars += chars
                    bar.update(chunk_bytes if known_size else 0)
                    # local ids (first appearance in the chunk) -> provisional ids (first appearance overall)
                    table = np.array([index.setdefault(t, len(index)) for t in uniques], dtype=np.int32)
                    table[local_ids].tofile(provisional)
                    total_tokens += len(local_ids)
        bar.close()
        if total_tokens == 0:
            names = ", ".join(s.name for s in sources)
            raise DataError(f"no text found in {names}; the input is empty (or only white space at word level)")
        token_ends = None if data.level == "char" else ends_path
        return _write_prepared(
            config, base, sources, out_dir, provisional_path, token_ends, index, total_tokens, total_chars, subword
        )
    finally:
        bar.close()
        provisional_path.unlink(missing_ok=True)
        ends_path.unlink(missing_ok=True)


def _temporary(out_dir: Path, prefix: str) -> Path:
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=prefix, suffix=".bin", delete=False) as tmp:
        return Path(tmp.name)


def _learn_subword(config: Config, sources: list[Source]) -> tokens.Subword:
    """Pass 0 of the subword level: learn the byte-level BPE tokenizer from the whole text."""
    data = config.data
    tokens.require_tokenizers()
    if any(s.name == STDIN_NAME for s in sources):
        raise DataError(
            "data.level: subword reads the text twice (once to learn its tokenizer), which stdin cannot do; "
            "save the text to a file and give that file instead"
        )
    console.info(f"learning a byte-level BPE tokenizer of {data.vocab_size:,} tokens from the text")
    pieces = (p for s in sources for p in _word_pieces(read_text(s, data.errors), space_leads=True))
    return tokens.Subword.train((p.lower() if data.lowercase else p for p in pieces), data.vocab_size)


def _write_prepared(
    config, base, sources, out_dir, provisional_path, ends_path, index, total_tokens, total_chars, subword
) -> Prepared:
    data = config.data
    provisional = np.memmap(provisional_path, dtype=np.int32, mode="r", shape=(total_tokens,))
    strings = list(index)  # provisional id -> token string (dicts keep insertion order)
    counts = _bincount(provisional, 0, total_tokens, len(strings))
    by_token = dict(zip(strings, counts.tolist()))
    vocab = Vocab.build_subword(subword, by_token, data.lowercase) if subword else _vocabulary(by_token, data, base)
    dtype = np.uint16 if len(vocab) <= 65535 else np.int32
    table = np.array([vocab.index.get(t, 0) for t in strings], dtype=dtype)
    val_tokens = max(2, round(total_tokens * data.val_fraction))
    train_tokens = total_tokens - val_tokens
    if train_tokens < 2:
        raise DataError(
            f"the corpus has only {total_tokens} tokens, too few to split into training and validation text; "
            "give rnngen more text"
        )
    crcs = _write_splits(out_dir, provisional, table, train_tokens)
    unknown = _unknown_words(provisional, table, strings, train_tokens)
    del provisional
    train_chars, val_chars = _split_chars(ends_path, total_tokens, train_tokens)
    files = {
        "train.bin": (train_tokens * np.dtype(dtype).itemsize, crcs[0]),
        "val.bin": (val_tokens * np.dtype(dtype).itemsize, crcs[1]),
        **_write_file(out_dir / "vocab.json", _vocab_json(vocab, by_token).encode("utf-8")),
        **_write_file(out_dir / UNKNOWN_FILE, json.dumps(unknown, ensure_ascii=False).encode("utf-8")),
        **(_write_file(out_dir / TOKENIZER_FILE, subword.json.encode("utf-8")) if subword else {}),
    }
    counts = {
        "tokens": total_tokens, "chars": total_chars, "train_tokens": train_tokens, "val_tokens": val_tokens,
        "train_chars": train_chars, "val_chars": val_chars, "vocab_size": len(vocab),
        "unk_tokens": int(counts[table == 0].sum()),
    }  # fmt: skip
    meta = {
        "format_version": FORMAT_VERSION,
        "settings": _settings(config, base),
        "sources": [s.to_dict() for s in sources],
        "dtype": np.dtype(dtype).name,
        "counts": counts,
        "files": {name: {"bytes": size, "crc32": crc} for name, (size, crc) in files.items()},
    }
    meta["checksum"] = _meta_checksum(meta)
    write_json(out_dir / "meta.json", meta)  # written last, and it checks the others: a mix of two builds is refused
    console.info(
        f"prepared {total_tokens:,} tokens ({train_tokens:,} train, {val_tokens:,} val), "
        f"vocabulary {len(vocab):,}, {counts['unk_tokens']:,} <unk> -> {out_dir}"
    )
    return Prepared(out_dir, meta, vocab)


def _bincount(ids: np.ndarray, start: int, stop: int, size: int) -> np.ndarray:
    """How often each id occurs in ids[start:stop], read in chunks."""
    counts = np.zeros(size, dtype=np.int64)
    for first in range(start, stop, ID_CHUNK):
        counts += np.bincount(ids[first : min(first + ID_CHUNK, stop)], minlength=size)
    return counts


def _write_splits(out_dir: Path, provisional: np.ndarray, table: np.ndarray, train_tokens: int) -> tuple[int, int]:
    """train.bin and val.bin in final ids; their CRC-32s, computed while writing (checking them later costs one read)."""
    train_crc = val_crc = 0
    with atomic_path(out_dir / "train.bin") as train_tmp, atomic_path(out_dir / "val.bin") as val_tmp:
        with open(train_tmp, "wb") as train_file, open(val_tmp, "wb") as val_file:
            for start in range(0, len(provisional), ID_CHUNK):
                final = table[provisional[start : start + ID_CHUNK]]
                cut = min(max(train_tokens - start, 0), len(final))
                final[:cut].tofile(train_file)
                final[cut:].tofile(val_file)
                train_crc, val_crc = crc32(final[:cut], train_crc), crc32(final[cut:], val_crc)
    return train_crc, val_crc


def _unknown_words(provisional: np.ndarray, table: np.ndarray, strings: list[str], train_tokens: int) -> dict:
    """The words behind <unk>: the distinct ones of the training split, and how often each is predicted in the
    validation split (its first token is context only). Open-vocabulary bits per character spell them."""
    unknown = np.flatnonzero(table == 0)
    train = _bincount(provisional, 0, train_tokens, len(strings))[unknown]
    val = _bincount(provisional, train_tokens + 1, len(provisional), len(strings))[unknown]
    return {
        "train_types": [strings[i] for i, n in zip(unknown.tolist(), train.tolist()) if n],
        "val_counts": {strings[i]: n for i, n in zip(unknown.tolist(), val.tolist()) if n},
    }


def _write_file(path: Path, contents: bytes) -> dict:
    """Write a prepared file atomically; {its name: (bytes, CRC-32)} for meta.json."""
    write_bytes(path, contents)
    return {path.name: (len(contents), crc32(contents))}


def _vocabulary(counts: dict[str, int], data, base: BaseVocab | None) -> Vocab:
    """A new vocabulary from the counts, or the base one kept exactly, or the base one grown by the counts."""
    if base is None:
        return Vocab.build(counts, data.level, data.lowercase, data.min_freq, data.max_vocab)
    if base.keep:
        return base.vocab
    grown = base.vocab.grow(counts, data.min_freq, data.max_vocab)
    console.info(
        f"vocabulary of {base.path}: {len(base.vocab):,} tokens, +{len(grown) - len(base.vocab):,} from this text"
    )
    return grown


def _split_chars(ends_path: Path | None, total_tokens: int, train_tokens: int) -> tuple[int, int]:
    """Characters of the text that the tokens after the first of each split predict (train, val).

    `ends_path` holds where every token ends in the text (int64); None at char level, where token i ends at i + 1.
    """
    if ends_path is None:
        return train_tokens - 1, total_tokens - train_tokens - 1
    ends = np.memmap(ends_path, dtype=np.int64, mode="r", shape=(total_tokens,))
    chars = tokens.predicted_chars(ends[:train_tokens]), tokens.predicted_chars(ends[train_tokens:])
    del ends
    return chars


def _vocab_json(vocab: Vocab, counts: dict[str, int]) -> str:
    """One token per line, so the file reads (and diffs) like a word list."""
    rows = [json.dumps([t, counts.get(t, 0)], ensure_ascii=False) for t in vocab.tokens]
    body = ",\n  ".join(rows)
    header = json.dumps(
        {"level": vocab.level, "lowercase": vocab.lowercase, "unk": vocab.tokens[0]}, ensure_ascii=False
    )
    return header[:-1] + ', "tokens": [\n  ' + body + "\n]}\n"


def describe(prepared: Prepared) -> str:
    """A short human summary of a prepared directory (printed by `rnngen prepare`)."""
    c = prepared.meta["counts"]
    return (
        f"{prepared.directory}\n"
        f"  level {prepared.meta['settings']['level']}, vocabulary {c['vocab_size']:,}, dtype {prepared.meta['dtype']}\n"
        f"  tokens {c['tokens']:,}: train {c['train_tokens']:,}, val {c['val_tokens']:,} ({c['unk_tokens']:,} <unk>)\n"
    )

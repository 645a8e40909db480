"""Input text: expand files, globs, directories and stdin; read them as clean UTF-8 in chunks.

Reading is streaming (a few MB at a time) so a corpus larger than memory can be prepared. The
text is normalised as it goes: a leading BOM is dropped and CRLF / CR become LF.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rnngen.errors import DataError

CHUNK_BYTES = 4 << 20
DEMO_NAME = "<demo: Python reference manual topics>"
STDIN_NAME = "<stdin>"


@dataclass
class Source:
    """One input: a file, stdin or the built-in demo corpus."""

    name: str
    size: int = 0
    mtime_ns: int = 0
    sha256: str = ""  # filled in by read_text() once the whole source has been read

    @property
    def is_file(self) -> bool:
        return self.name not in (DEMO_NAME, STDIN_NAME)

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "mtime_ns": self.mtime_ns, "sha256": self.sha256}


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8192)


def expand(inputs: list[str] | tuple[str, ...] | None) -> list[Source]:
    """Turn INPUT arguments into an ordered list of sources; None means the demo corpus."""
    if not inputs:
        return [Source(DEMO_NAME)]
    sources: list[Source] = []
    for item in inputs:
        if item == "-":
            sources.append(Source(STDIN_NAME))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*")) if _is_text_file(p, root=path)]
            if not found:
                raise DataError(
                    f"directory {item} holds no text files; put .txt files in it or name the files directly"
                )
            sources.extend(_file_source(p) for p in found)
        elif path.is_file():
            sources.append(_file_source(path, explicit=True))
        elif glob.has_magic(item):
            matches = [
                Path(p) for p in sorted(glob.glob(os.path.expanduser(item), recursive=True)) if Path(p).is_file()
            ]
            if not matches:
                raise DataError(f"no files match {item}; check the pattern (quote it so the shell does not expand it)")
            sources.extend(_file_source(p, explicit=True) for p in matches)
        else:
            raise DataError(f"input file {item} does not exist; check the path or set data.path in the config")
    return sources


def _is_text_file(path: Path, root: Path) -> bool:
    if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
        return False
    try:
        return not _looks_binary(_sniff(path))
    except OSError:
        return False


def _file_source(path: Path, explicit: bool = False) -> Source:
    try:
        stat = path.stat()
        head = _sniff(path)
    except OSError as e:
        raise DataError(f"cannot read input file {path}: {e.strerror}") from None
    if explicit and _looks_binary(head):
        raise DataError(
            f"{path} looks like a binary file (it contains NUL bytes), not UTF-8 text; "
            "give rnngen plain text files (convert UTF-16 files to UTF-8 first)"
        )
    return Source(str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def demo_text() -> str:
    """The built-in demo corpus: the Python reference manual topics that ship with every Python."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics)) + "\n"


def _raw_chunks(source: Source) -> Iterator[bytes]:
    if source.name == DEMO_NAME:
        data = demo_text().encode("utf-8")
        source.size = len(data)
        yield data
    elif source.name == STDIN_NAME:
        while block := sys.stdin.buffer.read(CHUNK_BYTES):
            source.size += len(block)
            yield block
    else:
        try:
            with open(source.name, "rb") as f:
                while block := f.read(CHUNK_BYTES):
                    yield block
        except OSError as e:
            raise DataError(f"cannot read input file {source.name}: {e.strerror}") from None


def read_text(source: Source, errors: str = "strict") -> Iterator[str]:
    """Yield the source's text in chunks: UTF-8 decoded, BOM dropped, newlines normalised to LF.

    Invalid UTF-8 raises a DataError with the byte offset, unless errors="replace". The source's
    sha256 is set once the last chunk has been read.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    digest = hashlib.sha256()
    consumed = 0
    carry_cr = False
    first = True
    for raw in _raw_chunks(source):
        if first and source.name == STDIN_NAME and _looks_binary(raw[:8192]):
            raise DataError("stdin looks like binary data (it contains NUL bytes), not UTF-8 text")
        digest.update(raw)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(raw)
        except UnicodeDecodeError as e:
            raise _decode_error(source, consumed - pending + e.start) from None
        consumed += len(raw)
        if first and text:  # the first decoded text: a pipe may deliver the 3-byte BOM over several reads
            text = text.removeprefix("\ufeff")
            first = False
        text, carry_cr = _normalise_newlines(text, carry_cr)
        if text:
            yield text
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise _decode_error(source, consumed - len(decoder.getstate()[0]) + e.start) from None
    tail = ("\r" if carry_cr else "") + tail
    tail = tail.replace("\r\n", "\n").replace("\r", "\n")
    if tail:
        yield tail
    source.sha256 = digest.hexdigest()


def _normalise_newlines(text: str, carry_cr: bool) -> tuple[str, bool]:
    """CRLF and CR -> LF; a CR at the very end is held back in case an LF follows in the next chunk."""
    if carry_cr:
        text = "\r" + text
    carry = text.endswith("\r")
    if carry:
        text = text[:-1]
    return text.replace("\r\n", "\n").replace("\r", "\n"), carry


def _decode_error(source: Source, offset: int) -> DataError:
    return DataError(
        f"{source.name} is not valid UTF-8 at byte offset {max(offset, 0)}; "
        "convert it to UTF-8, or set data.errors: replace to substitute invalid bytes"
    )

"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

A crash or kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

from rnngen.errors import WriteError

_USER_FIXABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EEXIST}


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` atomically."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = e.strerror or str(e)
        raise WriteError(
            f"could not write {target}: {reason}; the previous version (if any) is intact",
            user_fixable=e.errno in _USER_FIXABLE,
        ) from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty directory beside `path` to fill; on success it becomes `path`.

    Whatever `path` held before (the caller has decided it may go) is moved aside and removed only once
    the new directory is in place, so a crash leaves the old or the new one (or the old one moved aside).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        for file in tmp.iterdir():
            with open(file, "rb+") as f:
                os.fsync(f.fileno())
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():  # failed between the two renames: put the old one back
            os.replace(old, target)
        raise WriteError(
            f"could not write {target}: {e.strerror or e}; what was there is intact",
            user_fixable=e.errno in _USER_FIXABLE,
        ) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_dir(path: str | os.PathLike, setting: str) -> Path:
    """Create a directory and its parents; a failure names the directory and the setting to change."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(
            f"could not create directory {path}: {e.strerror or e}; set {setting} to a writable place",
            user_fixable=e.errno in _USER_FIXABLE,
        ) from None
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def crc32(data, running: int = 0) -> int:
    """CRC-32 of bytes (continuing from `running`): about 2 GB/s, and it catches accidental damage."""
    return zlib.crc32(data, running)


def file_crc32(path: str | os.PathLike, chunk: int = 1 << 24) -> int:
    running = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            running = crc32(block, running)
    return running


def keep_previous(path: str | os.PathLike, previous: str | os.PathLike) -> None:
    """Make `previous` a copy of `path` (a hard link where the file system allows one), atomically."""
    with atomic_path(previous) as tmp:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)

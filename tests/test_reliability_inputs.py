"""Bad input never ends in a traceback: every case exits 2 with one `Error:` line naming the thing.

Rows of the Reliability tables in docs/reliability.md. Config-file mistakes and the first
input-file cases are covered by tests/test_config.py and tests/test_prepare.py; here the same files go through
`rnngen train`, plus the cases those files do not have: corpora too short or too large, damaged
or hostile checkpoints, and sampling options out of range.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from rnngen import checkpoint
from tests.conftest import learnable_text, run_cli, tiny_config


def assert_user_error(result, *fragments: str) -> None:
    """Exit 2, exactly one `Error:` line, no traceback, nothing on stdout, and the expected words."""
    assert result.exit_code == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def png_image() -> bytes:
    """A real 2x2 RGB PNG (signature, IHDR, IDAT and IEND chunks), like a photo dropped among text files."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)  # width, height, bit depth, RGB, ...
    pixels = zlib.compress(b"\x00" + b"\xff\x00\x00" * 2 + b"\x00" + b"\x00\xff\x00" * 2)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- input text, through `train`


def _missing(d: Path) -> Path:
    return d / "missing.txt"


def _dir_without_text(d: Path) -> Path:
    (d / "pictures").mkdir()
    (d / "pictures" / "photo.png").write_bytes(png_image())
    return d / "pictures"


def _empty_file(d: Path) -> Path:
    (d / "empty.txt").write_bytes(b"")
    return d / "empty.txt"


def _png(d: Path) -> Path:
    (d / "photo.png").write_bytes(png_image())
    return d / "photo.png"


def _invalid_utf8(d: Path) -> Path:
    (d / "latin1.txt").write_bytes("café society\n".encode() * 20 + "naïve".encode("latin-1"))
    return d / "latin1.txt"


def _too_short(d: Path) -> Path:
    (d / "short.txt").write_text("the cat sat on the mat.\n" * 3, encoding="utf-8")
    return d / "short.txt"


@pytest.mark.parametrize(
    "make, fragments",
    [
        (_missing, ["missing.txt does not exist"]),
        (_dir_without_text, ["pictures holds no text files"]),
        (_empty_file, ["empty.txt", "the input is empty"]),
        (_png, ["photo.png looks like a binary file"]),
        (_invalid_utf8, ["latin1.txt is not valid UTF-8 at byte offset 282", "data.errors: replace"]),
        (_too_short, ["shorter than one training window", "lower train.batch_size or train.seq_len"]),
    ],
    ids=["missing", "dir-without-text", "empty-file", "png", "invalid-utf8", "shorter-than-one-window"],
)
def test_bad_input_text_is_refused_by_train(tmp_path, make, fragments):
    config = tiny_config(tmp_path, make(tmp_path), train={"batch_size": 8, "seq_len": 16})
    assert_user_error(run_cli("train", "--config", config), *fragments)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_white_space_only_at_word_level(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text(" \t  \u00a0 " * 100, encoding="utf-8")
    assert_user_error(run_cli("prepare", blank, "--level", "word", "--out", tmp_path / "p"), "the input is empty")


def test_single_50mb_line_prepares_and_trains_in_bounded_memory(tmp_path):
    """One 50 MB line, no newline: prepared in streaming chunks and trained a few steps, in a subprocess.

    The child reports how far its peak resident memory (or that of a prepare worker it forked) rose
    above what it held once torch was imported. The budget covers the memory-mapped id file (4 bytes
    a token: 200 MB of file pages) and the chunks in flight to up to 4 tokenizer workers; holding
    the text as a list of characters would add 400 MB on top (8 bytes a pointer).
    """
    line = tmp_path / "one_line.txt"
    words = b"the quick brown fox jumps over the lazy dog; "
    line.write_bytes((words * (50_000_000 // len(words) + 1))[:50_000_000])
    probe = (
        "import resource, sys, torch, numpy\n"
        "from rnngen.cli import main\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    main(sys.argv[1:])\n"
        "finally:\n    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "    print(f'peak growth kb={peak - before}', file=sys.stderr)\n"
    )
    sets = {
        "data.path": line, "data.val_fraction": 0.0005, "train.out_dir": tmp_path / "run", "train.max_epochs": "null",
        "train.max_steps": 3, "train.batch_size": 4, "train.seq_len": 16, "train.eval_batch_size": 64,
        "train.sample_length": 10, "model.embedding_dim": 8, "model.hidden_size": 16, "model.num_layers": 1,
        "model.dropout": 0, "train.device": "cpu",
    }  # fmt: skip
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run([sys.executable, "-c", probe, "train", *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "prepared 50,000,000 tokens" in done.stderr
    grown_mb = int(done.stderr.rsplit("peak growth kb=", 1)[1].split()[0]) / 1024
    assert grown_mb < 512, f"peak memory grew by {grown_mb:.0f} MB for a 50 MB input"
    assert checkpoint.load(tmp_path / "run" / "last.pt")[checkpoint.TRAINER_STATE]["step"] == 3


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny word-level run (seconds), shared by the checkpoint and sampling cases."""
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "corpus.txt"
    corpus.write_text(learnable_text(), encoding="utf-8")
    config = tiny_config(root, corpus, data={"level": "word"}, train={"max_steps": 6, "eval_every": 6, "save_every": 6})
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return root / "run"


class Hostile:
    """Unpickling this runs `touch MARKER` through os.system: what a malicious .pt file can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _flip_bytes(data: bytes) -> bytes:
    damaged = bytearray(data)
    for i in range(64, len(damaged), 101):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def bad_checkpoint(kind: str, good: Path, directory: Path) -> Path:
    path = directory / f"{kind}.pt"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "corrupt":
        path.write_bytes(_flip_bytes(good.read_bytes()))
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "text-file":
        path.write_text("this is not a checkpoint\n", encoding="utf-8")
    elif kind == "foreign":  # a plain PyTorch state_dict, e.g. from another tool
        torch.save({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, path)
    elif kind == "newer-format":
        payload = torch.load(good, weights_only=True)
        payload["format_version"] = checkpoint.FORMAT_VERSION + 1
        torch.save(payload, path)
    return path


CHECKPOINT_CASES = {
    "missing": ["missing.pt does not exist"],
    "truncated": ["truncated.pt is truncated or corrupt"],
    "corrupt": ["corrupt.pt is", "corrupt"],
    "zero-bytes": ["zero-bytes.pt is truncated or corrupt"],
    "text-file": ["text-file.pt is", "corrupt"],
    "foreign": ["foreign.pt is not an rnngen checkpoint"],
    "newer-format": [
        "newer-format.pt was written by a newer rnngen",
        f"format {checkpoint.FORMAT_VERSION + 1}",
        "upgrade",
    ],
}
COMMANDS = {
    "sample": lambda path: ("sample", "--checkpoint", path, "--length", "5"),
    "info": lambda path: ("info", path),
    "evaluate": lambda path: ("evaluate", "--checkpoint", path),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", CHECKPOINT_CASES)
def test_damaged_or_foreign_checkpoint(trained, tmp_path, kind, command):
    path = bad_checkpoint(kind, trained / "last.pt", tmp_path)
    assert_user_error(run_cli(*COMMANDS[command](path)), *CHECKPOINT_CASES[kind])


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "newer-format"])
def test_resume_from_a_damaged_last_pt(trained, tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(bad_checkpoint(kind, trained / "last.pt", tmp_path), run / "last.pt")
    config = tiny_config(tmp_path, tmp_path / "unused.txt")
    assert_user_error(run_cli("train", "--config", config, "--resume"), f"{run / 'last.pt'}")


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_code_in_a_checkpoint_never_runs(trained, tmp_path, container):
    marker = tmp_path / "code-ran"
    hostile = {"format": checkpoint.FORMAT, "format_version": 1, "config": Hostile(marker)}
    path = tmp_path / "hostile.pt"
    if container == "torch.save":
        torch.save(hostile, path)
        unsafe_load = lambda: torch.load(path, weights_only=False)  # noqa: E731
    else:
        path.write_bytes(pickle.dumps(hostile))
        unsafe_load = lambda: pickle.loads(path.read_bytes())  # noqa: E731
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "last.pt")
    config = tiny_config(tmp_path, tmp_path / "unused.txt")
    for args in [*(make(path) for make in COMMANDS.values()), ("train", "--config", config, "--resume")]:
        assert_user_error(run_cli(*args), "refused")
        assert not marker.exists(), f"`rnngen {args[0]}` ran the code inside the checkpoint"
    unsafe_load()  # the control: an unsafe load really runs it
    assert marker.exists()


# --------------------------------------------------------------------------- sampling options


@pytest.mark.parametrize(
    "options, fragments",
    [
        (["--length", "-1"], ["sample.length: must be at least 0 (got -1"]),
        (["--temperature", "-0.5"], ["sample.temperature: must be at least 0"]),
        (["--temperature", "nan"], ["sample.temperature: must be a finite number"]),
        (["--top-p", "0"], ["sample.top_p: must be greater than 0"]),
        (["--top-p", "1.5"], ["sample.top_p: must be at most 1"]),
        (["--top-k", "0"], ["sample.top_k: must be at least 1"]),
        (["--top-k", "-3"], ["sample.top_k: must be at least 1"]),
        (["--num-samples", "0"], ["sample.num_samples: must be at least 1"]),
        (["--length", "many"], ["Invalid value for '--length'"]),
        (["--seed", "   "], ["has no tokens at word level"]),
        (["--seed", "\t"], ["has no tokens at word level"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v[0].startswith("--") else None,
)
def test_sampling_options_out_of_range(trained, options, fragments):
    assert_user_error(run_cli("sample", "--run", trained, *options), *fragments)


def test_seed_from_stdin_that_tokenizes_to_nothing(trained):
    result = run_cli("sample", "--run", trained, "--seed", "-", input="   \n")
    assert_user_error(result, "has no tokens at word level")

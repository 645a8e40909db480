"""Shared test helpers: run the real CLI in-process, and make small corpora and configs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

torch.set_num_threads(1)  # tiny models: threads cost more than they give, and tests may run side by side

SENTENCES = [
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a cat and a dog ran to the park.",
    "the bird sang in the tree.",
]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str, input: str | bytes | None = None) -> CliResult:
    """Run `rnngen ARGS` through the real entry point (error handling and exit codes included)."""
    from rnngen.cli import main

    runner = CliRunner()
    code = 0
    with runner.isolation(input=input) as (out, err, _):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        stdout = out.getvalue().decode("utf-8", "replace")
        stderr = err.getvalue().decode("utf-8", "replace")
    return CliResult(code, stdout, stderr)


def learnable_text(repeats: int = 60) -> str:
    """A small corpus with strong structure, so tiny models learn it in a few steps."""
    return "\n".join(SENTENCES * repeats) + "\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(learnable_text(), encoding="utf-8")
    return path


def tiny_config(tmp_path: Path, corpus: Path, **sections) -> Path:
    """Write a config for a seconds-long run; keyword args override whole sections' keys."""
    config = {
        "data": {"path": str(corpus), "level": "char", "val_fraction": 0.1},
        "model": {"cell": "lstm", "embedding_dim": 16, "hidden_size": 32, "num_layers": 1, "dropout": 0.0},
        "train": {
            "out_dir": str(tmp_path / "run"),
            "batch_size": 4,
            "seq_len": 16,
            "max_epochs": None,
            "max_steps": 20,
            "warmup_steps": 2,
            "eval_every": 10,
            "save_every": 10,
            "log_every": 5,
            "sample_length": 20,
            "device": "cpu",
            "recipe": "none",  # exactly these settings: no recipe fills the keys left out
        },
        "sample": {"length": 30},
    }
    for section, values in sections.items():
        config[section].update(values)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own directory, so runs/LATEST never leaks between tests."""
    monkeypatch.chdir(tmp_path)


def train_char_and_word(root: Path, hidden_size: int, max_steps: int) -> dict[str, Path]:
    """A tiny char model and word model on the learnable corpus: {"char": run dir, "word": run dir}."""
    corpus = root / "corpus.txt"
    corpus.write_text(learnable_text(), encoding="utf-8")
    runs = {}
    for level in ("char", "word"):
        config = tiny_config(root / level, corpus, data={"level": level}, model={"hidden_size": hidden_size},
                             train={"max_steps": max_steps, "eval_every": 60, "lr": 0.01})  # fmt: skip
        result = run_cli("train", "--config", config)
        assert result.exit_code == 0, result.stderr
        runs[level] = root / level / "run"
    return runs

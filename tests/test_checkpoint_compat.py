"""Checkpoints and run directories written before a change still work after it.

tests/fixtures/pre_refactor holds a tiny character LSTM run (6 steps) and an order-3 n-gram run,
written by the code before issue 13's refactor (make_fixture.py says how), and what that code
answered: a greedy sample, the evaluation loss, and the metrics of a resume to step 8.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from rnngen import checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "pre_refactor"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def old_runs(tmp_path: Path) -> Path:
    """A copy of the fixture in the test's working directory (runs and corpus.txt side by side)."""
    for name in ("run", "ngram"):
        shutil.copytree(FIXTURE / name, tmp_path / name)
    shutil.copy(FIXTURE / "corpus.txt", tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", ["run", "ngram"])
def test_old_checkpoint_loads_and_samples_the_same_text(old_runs, name):
    result = run_cli("sample", "--run", name, "--seed", "the", "--length", "40", "--temperature", "0")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == EXPECTED[name]["greedy_sample"]
    result = run_cli("sample", "--run", name, "--length", "20", "--random-seed", "1", "--num-samples", "2")
    assert result.exit_code == 0, result.stderr
    info = run_cli("info", name, "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["cell"] == ("ngram" if name == "ngram" else "lstm")


@pytest.mark.parametrize("name", ["run", "ngram"])
def test_old_checkpoint_evaluates_to_the_same_loss(old_runs, name):
    result = run_cli("evaluate", "--checkpoint", name, "--data", "corpus.txt", "--json")
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["tokens"] == EXPECTED[name]["evaluate"]["tokens"]
    assert scores["loss"] == pytest.approx(EXPECTED[name]["evaluate"]["loss"], rel=1e-6)


def test_old_run_resumes_exactly(old_runs):
    result = run_cli("train", "--config", "run/config.yaml", "--resume", "--set", "train.max_steps=8")
    assert result.exit_code == 0, result.stderr
    assert "at step 6" in result.stderr
    with open(old_runs / "run" / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    header, *expected = EXPECTED["resumed_metrics"]
    assert [[row[k] for k in header[:3]] for row in rows] == [r[:3] for r in expected]
    for row, want in zip(rows, expected):
        for key, value in zip(header[3:], want[3:]):
            assert float(row[key]) == pytest.approx(float(value), rel=1e-4), (row["step"], key)
    assert checkpoint.load(old_runs / "run" / "last.pt")[checkpoint.SUMMARY]["step"] == 8

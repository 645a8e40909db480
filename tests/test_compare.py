"""`rnngen compare`: n-gram and recurrent models trained on the same data, measured into one table."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from rnngen.analysis.compare import one_line, parse_specs, render
from rnngen.errors import UserError
from tests.conftest import run_cli, tiny_config


def test_compare_trains_and_measures_every_model(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus)
    result = run_cli(
        "compare", "--config", config, "--models", "ngram:2,ngram:4", "--models", "gru",
        "--set", "train.max_steps=10", "--budget-minutes", "1", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["model"] for r in rows] == ["ngram-2", "ngram-4", "gru"]
    bigram, four_gram, gru = rows
    assert bigram["ngrams"] < four_gram["ngrams"] and bigram["parameters"] is None
    assert gru["parameters"] > 0 and gru["ngrams"] is None
    for row in rows:
        assert math.isfinite(row["val_loss"]) and row["bpc"] > 0 and row["memory_mb"] > 0
        assert row["sample_tokens_per_s"] > 0 and row["sample"]
        assert (tmp_path / "run" / "compare" / row["model"] / "best.pt").exists()
    # the n-gram models learn this very regular corpus far better than 10 steps of a tiny gru
    assert four_gram["bpc"] < bigram["bpc"] < gru["bpc"]

    # an existing checkpoint is measured on the same validation text, without training
    again = run_cli(
        "compare", "--config", config, "--models", tmp_path / "run" / "compare" / "ngram-4", "--format", "csv"
    )
    assert again.exit_code == 0, again.stderr
    (row,) = csv.DictReader(io.StringIO(again.stdout))
    assert float(row["val_loss"]) == pytest.approx(four_gram["val_loss"])

    table = render(rows, "markdown").splitlines()
    assert table[0].startswith(
        "| model | size | memory (MB) | train time (s) | s/epoch | cost/token | val loss | perplexity | bits/char"
    )
    assert len(table) == 2 + len(rows) and "n-grams" in table[2] and "params" in table[4]


def test_bad_specs_are_refused_with_the_choices(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus)
    result = run_cli("compare", "--config", config, "--models", "lstm,transformer")
    assert result.exit_code == 2
    assert "'transformer'" in result.stderr and "ngram:N" in result.stderr
    with pytest.raises(UserError, match="more than once"):
        parse_specs(["lstm", "lstm"])
    with pytest.raises(UserError):
        parse_specs(["ngram:0"])


def test_one_line_samples_fit_a_table_cell():
    assert one_line("ROMEO:\nI  will\tgo.\n") == "ROMEO: / I will go. /"
    assert len(one_line("x" * 500)) == 60

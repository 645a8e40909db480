"""Open-vocabulary bits per character: every <unk> also pays for its spelling (rnngen.models.speller)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from rnngen import api, checkpoint
from rnngen.data.prepare import open_prepared
from rnngen.metrics import read_metrics
from rnngen.models.speller import Speller
from tests.conftest import run_cli, tiny_config

TRAIN_TEXT = "the cat sat on the mat . the dog sat on the log . a cat and a dog ran to the park .\n" * 40
KNOWN_ONLY = "the dog sat on the mat . a cat ran to the log .\n"
TWO_UNKNOWN = "the zebra sat on the mat . a quokka ran to the log .\n"  # zebra and quokka were never seen


@pytest.fixture
def word_run(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TRAIN_TEXT + "the emu sat on the mat .\n", encoding="utf-8")  # "emu" only in validation
    config = tiny_config(
        tmp_path,
        corpus,
        data={"level": "word", "val_fraction": 0.05, "min_freq": 2},
        train={"max_steps": 10, "eval_every": 10},
    )
    assert run_cli("train", "--config", config).exit_code == 0
    return tmp_path / "run"


def evaluate(run, text_path):
    result = run_cli("evaluate", "--checkpoint", run, "--data", text_path, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_unknown_words_pay_for_their_spelling(tmp_path, word_run):
    (tmp_path / "two.txt").write_text(TWO_UNKNOWN, encoding="utf-8")
    scores = evaluate(word_run, tmp_path / "two.txt")
    assert scores["unk_tokens"] == 2
    model = api.load(word_run)
    types = checkpoint.load(word_run / "best.pt")[checkpoint.SPELLER]["types"]
    assert "emu" not in types and "cat" in types  # the training split's tokens, not the validation split's
    by_hand = Speller(types).bits(["zebra"])[0] + Speller(types).bits(["quokka"])[0]
    closed_bits = scores["bpc"] * scores["chars"]
    assert scores["bpc_open"] * scores["chars"] == pytest.approx(closed_bits + by_hand, rel=1e-9)
    assert model.speller.total_bits({"zebra": 1, "quokka": 1}) == pytest.approx(by_hand)


def test_without_unknown_words_both_figures_agree(tmp_path, word_run, corpus):
    (tmp_path / "known.txt").write_text(KNOWN_ONLY, encoding="utf-8")
    scores = evaluate(word_run, tmp_path / "known.txt")
    assert scores["unk_tokens"] == 0 and scores["bpc_open"] == scores["bpc"]
    char_config = tiny_config(tmp_path / "char", corpus, train={"max_steps": 5, "eval_every": 5})
    assert run_cli("train", "--config", char_config).exit_code == 0
    rows, _ = read_metrics(tmp_path / "char" / "run" / "metrics.csv")
    scored = [r for r in rows if r["val_bpc"]]
    assert scored and all(r["val_bpc_open"] == r["val_bpc"] for r in scored)


def test_the_validation_split_records_its_unknown_words(word_run):
    prepared = open_prepared(word_run / "prepared")
    unknown = prepared.unknown_words()
    assert unknown["val_counts"] == {"emu": 1}
    model = api.load(word_run)
    val = model.evaluate(batch_size=16)
    extra = model.speller.bits(["emu"])[0]
    assert val.bpc_open * val.chars == pytest.approx(val.bpc * val.chars + extra)
    saved = checkpoint.load(word_run / "best.pt")[checkpoint.SUMMARY]["val"]
    assert saved["bpc_open"] == pytest.approx(val.bpc_open, rel=1e-5)  # as training validated it
    info = json.loads(run_cli("info", word_run, "--json").stdout)
    assert info["val_bpc_open"] == saved["bpc_open"]


def test_speller_is_a_kneser_ney_model_of_the_word_types():
    """Order 1 by hand: p(c) = max(n_c - D, 0) / N + D * T / N / V over the characters and end marks of the
    types, D = n1 / (n1 + 2 n2) from how many symbols occur once and twice."""
    types = ["ab", "abb", "c"]
    counts = Counter("".join(types)) + Counter({"<end>": len(types)})  # a:2 b:3 c:1 end:3
    total, kinds, vocab = sum(counts.values()), len(counts), 5  # vocabulary: a b c, unknown char, end
    n1, n2 = sum(n == 1 for n in counts.values()), sum(n == 2 for n in counts.values())
    discount = n1 / (n1 + 2 * n2)

    def p(symbol):
        return max(counts[symbol] - discount, 0) / total + discount * kinds / total / vocab

    speller = Speller(types, order=1)
    for word in ["ab", "ca", "zz"]:  # z never occurred: the floor
        by_hand = -sum(math.log2(p(c)) for c in word) - math.log2(p("<end>"))
        assert speller.bits([word])[0] == pytest.approx(by_hand)
    assert speller.bits(["ab", "ca"]) == pytest.approx([speller.bits(["ab"])[0], speller.bits(["ca"])[0]])

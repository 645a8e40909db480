"""Subword level (byte-level BPE) and bits per character counted on the original text."""

import json
import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnngen import checkpoint
from rnngen.data import tokens
from rnngen.data.vocab import UNK, Vocab
from tests.conftest import learnable_text, run_cli, tiny_config

TRAINING_TEXT = learnable_text(20) + "Zoë's café: naïve «quotes», 日本語のテキスト, emoji 🎉🚀 and tabs\tand  spaces.\n"


@pytest.fixture(scope="module")
def subword():
    return tokens.Subword.train([TRAINING_TEXT], 400)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_subword_round_trips_any_unicode_with_nothing_unknown(subword, text):
    vocab = Vocab.build_subword(subword, {})
    pieces, ends = vocab.split_with_ends(text)
    assert vocab.join(pieces) == text
    ids = vocab.encode(pieces)
    assert all(i != 0 or piece == UNK for i, piece in zip(ids, pieces)), "no text is ever unknown"
    assert vocab.join(vocab.decode(ids)) == text
    assert ends == sorted(ends) and (not ends or ends[-1] == len(text))


def test_streaming_decode_holds_back_partial_characters(subword):
    vocab = Vocab.build_subword(subword, {})
    text = "🎉 日本"
    detokenizer = vocab.detokenizer()
    pieces = [detokenizer.piece(t) for t in vocab.split(text)]
    assert "".join(pieces) + detokenizer.flush() == text
    assert "\ufffd" not in "".join(pieces)


def _subword_run(tmp_path, corpus, **train):
    config = tiny_config(
        tmp_path, corpus, data={"level": "subword", "vocab_size": 300, "val_fraction": 0.1},
        train={"max_steps": 10, "eval_every": 10, **train},
    )  # fmt: skip
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return config, tmp_path / "run"


def test_subword_training_checkpoint_and_sampling(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TRAINING_TEXT, encoding="utf-8")
    _, run = _subword_run(tmp_path, corpus)
    meta = json.loads((run / "prepared" / "meta.json").read_text())
    assert meta["settings"]["vocab_size"] == 300 and meta["counts"]["unk_tokens"] == 0
    payload = checkpoint.load(run / "best.pt")  # weights_only: the tokenizer is plain JSON text
    assert isinstance(payload[checkpoint.VOCAB]["tokenizer"], str)
    assert len(payload[checkpoint.VOCAB]["tokens"]) == 300 + 1  # + <unk>, which text never produces

    seed = "Ωmega ✨ never seen"  # characters the training text never had: still no unknown token
    result = run_cli("sample", "--checkpoint", run / "best.pt", "--seed", seed, "--length", "40", "--random-seed", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(seed)
    assert "<unk>" not in result.stdout

    info = run_cli("info", run / "best.pt", "--json")
    assert json.loads(info.stdout)["level"] == "subword"

    holdout = tmp_path / "holdout.txt"
    holdout.write_text("the cat sat on the mat.\n🎉 new words\n", encoding="utf-8")
    scores = json.loads(run_cli("evaluate", "--checkpoint", run / "best.pt", "--data", holdout, "--json").stdout)
    assert scores["chars"] == len(holdout.read_text()) - 3  # after the first token, "the"
    assert scores["unk_tokens"] == 0


def test_subword_without_tokenizers_says_how_to_install(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if it were not installed
    config = tiny_config(tmp_path, corpus, data={"level": "subword", "vocab_size": 300})
    result = run_cli("prepare", "--config", config)
    assert result.exit_code == 2
    assert "pip install 'rnngen[subword]'" in result.stderr and "Traceback" not in result.stderr


def test_subword_refuses_stdin(tmp_path):
    result = run_cli("prepare", "-", "--level", "subword", "--out", tmp_path / "p", input="some text\n")
    assert result.exit_code == 2 and "stdin" in result.stderr


# --------------------------------------------------------------------------- bits per character

SPACED = 'He said , " <unk> is here " ( and @-@ there ) .\nThe <unk> \' s hat — 3 @.@ 5 feet .\n'


@pytest.mark.parametrize("level", ["word", "subword", "char"])
def test_bpc_counts_the_characters_of_the_original_text(tmp_path, level):
    half = SPACED * 12
    corpus = tmp_path / "spaced.txt"
    corpus.write_text(half + half, encoding="utf-8")
    first = {"word": "He", "char": "H"}.get(level)
    config = tiny_config(tmp_path, corpus, data={"level": level, "val_fraction": 0.5, "vocab_size": 300})
    assert run_cli("prepare", "--config", config).exit_code == 0
    counts = json.loads((tmp_path / "run" / "prepared" / "meta.json").read_text())["counts"]
    assert counts["train_tokens"] == counts["val_tokens"]  # the split falls between the two halves
    if first is None:  # subword: the first token of each half is the one that starts it
        first = tokens.Subword(
            (tmp_path / "run" / "prepared" / "tokenizer.json").read_text(encoding="utf-8")
        ).split_with_ends(half)[0][0]
    assert counts["val_chars"] == counts["train_chars"] == len(half) - len(first)
    if level == "word":  # the re-joined token stream is another length: what bpc used to divide by
        assert len(tokens.join(tokens.split(half, "word"), "word")) != len(half)

    result = run_cli("train", "--config", config, "--set", "train.max_steps=5", "--set", "train.eval_every=5")
    assert result.exit_code == 0, result.stderr
    holdout = tmp_path / "holdout.txt"
    holdout.write_text(half, encoding="utf-8")
    scores = json.loads(run_cli("evaluate", "--checkpoint", tmp_path / "run", "--data", holdout, "--json").stdout)
    assert scores["chars"] == len(half) - len(first)
    assert scores["bpc"] == pytest.approx(scores["loss"] * scores["tokens"] / math.log(2) / scores["chars"])
    validation = json.loads(run_cli("evaluate", "--checkpoint", tmp_path / "run", "--json").stdout)
    assert validation["chars"] == counts["val_chars"]

import json
import os

import numpy as np
import pytest

from rnngen.config import resolve
from rnngen.data.prepare import prepare
from rnngen.data.vocab import UNK, Vocab
from tests.conftest import run_cli


def config_for(tmp_path, path, *extra):
    return resolve(None, [f"data.path={path}", f"train.out_dir={tmp_path / 'run'}", "train.recipe=none", *extra])


def test_char_prepare_files_and_split(tmp_path):
    text = "abcdefghij" * 100
    (tmp_path / "t.txt").write_text(text)
    prepared = prepare(config_for(tmp_path, tmp_path / "t.txt", "data.val_fraction=0.1"))
    d = prepared.directory
    assert {p.name for p in d.iterdir()} == {"vocab.json", "train.bin", "val.bin", "meta.json", "unknown.json"}
    train, val = prepared.ids("train"), prepared.ids("val")
    assert len(train) == 900 and len(val) == 100
    decoded = "".join(prepared.vocab.decode(np.concatenate([train, val]).tolist()))
    assert decoded == text  # contiguous: val is exactly the end of the text
    assert prepared.meta["dtype"] == "uint16" and os.path.getsize(d / "train.bin") == 900 * 2
    assert prepared.val_chars == 99


def test_vocab_min_freq_max_vocab_and_unk(tmp_path):
    (tmp_path / "t.txt").write_text("a a a a b b b c c d " * 3)
    prepared = prepare(config_for(tmp_path, tmp_path / "t.txt", "data.level=word", "data.min_freq=7"))
    assert prepared.vocab.tokens == [UNK, "a", "b"]
    assert prepared.meta["counts"]["unk_tokens"] == 9
    prepared = prepare(config_for(tmp_path, tmp_path / "t.txt", "data.level=word", "data.max_vocab=2"))
    assert prepared.vocab.tokens == [UNK, "a"]
    vocab_file = json.loads((prepared.directory / "vocab.json").read_text())
    assert vocab_file["tokens"][1] == ["a", 12]


def test_vocab_is_deterministic():
    counts = {"b": 2, "a": 2, "c": 5}
    assert Vocab.build(counts, "word").tokens == [UNK, "c", "a", "b"]


def test_int32_when_vocabulary_is_large(tmp_path):
    words = " ".join(f"w{i}" for i in range(70000))
    (tmp_path / "t.txt").write_text(words)
    prepared = prepare(config_for(tmp_path, tmp_path / "t.txt", "data.level=word"))
    assert prepared.meta["dtype"] == "int32"
    assert prepared.vocab.decode(prepared.ids("train")[:2].tolist()) == ["w0", "w1"]


def test_reuse_and_invalidation(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world\n" * 50)
    config = config_for(tmp_path, src)
    first = prepare(config)
    stamp = os.path.getmtime(first.directory / "meta.json")
    assert os.path.getmtime(prepare(config).directory / "meta.json") == stamp  # reused
    os.utime(src, ns=(1, 1))  # touched, same content: still reused (content hash)
    assert os.path.getmtime(prepare(config).directory / "meta.json") == stamp
    src.write_text("hello there\n" * 50)  # changed content
    assert prepare(config).vocab.tokens != first.vocab.tokens
    lowered = prepare(config_for(tmp_path, src, "data.lowercase=true"))  # changed setting
    assert lowered.meta["settings"]["lowercase"] is True


def test_inputs_dirs_globs_and_normalisation(tmp_path):
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    (books / "a.txt").write_bytes("\ufeffone\r\ntwo\r".encode())
    (books / "sub" / "b.txt").write_bytes(b"three\n")
    (books / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    prepared = prepare(config_for(tmp_path, books, "data.val_fraction=0.2"))
    ids = np.concatenate([prepared.ids("train"), prepared.ids("val")]).tolist()
    assert "".join(prepared.vocab.decode(ids)) == "one\ntwo\nthree\n"
    assert len(prepared.meta["sources"]) == 2
    via_glob = prepare(config_for(tmp_path, f"{books}/**/*.txt"))
    assert len(via_glob.meta["sources"]) == 2


def test_stdin_input(tmp_path):
    result = run_cli("prepare", "-", "--level", "word", "--out", tmp_path / "p", input="the cat sat\n" * 20)
    assert result.exit_code == 0, result.stderr
    assert "vocabulary 5" in result.stdout  # <unk>, the, cat, sat, newline
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["sources"][0]["name"] == "<stdin>" and meta["counts"]["tokens"] == 80


def test_invalid_utf8_names_byte_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello world\n" * 10 + b"\xff\xfe oops")
    result = run_cli("prepare", bad, "--out", tmp_path / "p")
    assert result.exit_code == 2
    assert "bad.txt is not valid UTF-8 at byte offset 120" in result.stderr
    assert "Traceback" not in result.stderr
    ok = run_cli("prepare", bad, "--out", tmp_path / "p", "--set", "data.errors=replace")
    assert ok.exit_code == 0, ok.stderr


def test_invalid_utf8_offset_across_chunks(tmp_path, monkeypatch):
    import rnngen.data.sources

    monkeypatch.setattr(rnngen.data.sources, "CHUNK_BYTES", 7)
    bad = tmp_path / "bad.txt"
    bad.write_bytes("héllo wörld ".encode() * 3 + b"\xc3(")
    with pytest.raises(Exception, match="byte offset 42"):
        prepare(config_for(tmp_path, bad))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.txt", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no text files"),
        (lambda d: (d / "e.txt").write_text("") and None or d / "e.txt", "the input is empty"),
        (lambda d: (d / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR") and None or d / "p.png", "binary"),
    ],
    ids=["missing", "empty-dir", "empty-file", "binary"],
)
def test_bad_inputs_exit_2(tmp_path, make, message):
    result = run_cli("prepare", make(tmp_path), "--out", tmp_path / "p")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_word_chunks_never_split_words(tmp_path, monkeypatch):
    import rnngen.data.sources

    monkeypatch.setattr(rnngen.data.sources, "CHUNK_BYTES", 5)
    (tmp_path / "t.txt").write_text("alpha beta gamma delta " * 20)
    prepared = prepare(config_for(tmp_path, tmp_path / "t.txt", "data.level=word"))
    assert sorted(prepared.vocab.tokens) == sorted([UNK, "alpha", "beta", "gamma", "delta"])


def test_demo_corpus_needs_no_files(tmp_path):
    result = run_cli("prepare", "--set", f"train.out_dir={tmp_path / 'demo'}")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "demo" / "prepared" / "meta.json").read_text())
    assert meta["sources"][0]["name"].startswith("<demo") and meta["counts"]["tokens"] > 400_000


def test_parallel_tokenizing_gives_the_same_result(tmp_path, monkeypatch):
    import rnngen.data.prepare
    import rnngen.data.sources

    (tmp_path / "t.txt").write_text("Alpha beta, gamma! 我们 delta-epsilon.\n" * 400)
    sequential = prepare(config_for(tmp_path / "a", tmp_path / "t.txt", "data.level=word"))
    monkeypatch.setattr(rnngen.data.prepare, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(rnngen.data.sources, "CHUNK_BYTES", 1000)
    parallel = prepare(config_for(tmp_path / "b", tmp_path / "t.txt", "data.level=word"))
    assert parallel.vocab.tokens == sequential.vocab.tokens
    assert np.array_equal(parallel.ids("train"), sequential.ids("train"))
    assert parallel.meta["counts"] == sequential.meta["counts"]

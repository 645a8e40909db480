"""Token inputs: one-hot vectors, learned embeddings, and pre-trained GloVe / word2vec vectors."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
import torch

from rnngen import checkpoint
from rnngen.config import resolve
from rnngen.errors import ConfigError
from rnngen.models.embeddings import read_vectors
from rnngen.models.recurrent import model_args
from rnngen.models.registry import build_model
from tests.conftest import run_cli, tiny_config

# --------------------------------------------------------------------------- one-hot input


def tiny_model(cell: str, input: str, vocab_size: int = 15, embedding_dim: int = 8):
    config = resolve(None, [f"model.cell={cell}", f"model.input={input}", "model.hidden_size=12", "model.dropout=0"])
    args = model_args(config.model, vocab_size) | {"embedding_dim": embedding_dim}
    return build_model(args).eval()


def copy_all_but_input(source, target):
    """Every weight of `source` into `target` except the first layer's input matrix."""
    state = {k: v for k, v in source.state_dict().items() if k not in ("embedding.weight", "rnn.weight_ih_l0")}
    target.load_state_dict(state, strict=False)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_onehot_input_equals_an_embedding_whose_table_is_the_input_weights(cell):
    torch.manual_seed(0)
    embedded, onehot = tiny_model(cell, "embedding"), tiny_model(cell, "onehot")
    copy_all_but_input(embedded, onehot)
    with torch.no_grad():  # W_xh x_t with x_t one-hot is a row of the table times W_ih: (G*H, E) @ (E, V)
        onehot.rnn.weight_ih_l0.copy_(embedded.rnn.weight_ih_l0 @ embedded.embedding.weight.T)
    tokens = torch.randint(0, 15, (3, 9))
    assert onehot.rnn.weight_ih_l0.shape[1] == 15  # the first layer reads the V-dim one-hot vector itself
    assert torch.allclose(onehot(tokens)[0], embedded(tokens)[0], atol=1e-5)


def test_onehot_is_an_embedding_of_width_v_with_an_identity_table():
    torch.manual_seed(0)
    onehot, wide = tiny_model("lstm", "onehot"), tiny_model("lstm", "embedding", embedding_dim=15)
    copy_all_but_input(onehot, wide)
    with torch.no_grad():
        wide.embedding.weight.copy_(torch.eye(15))
        wide.rnn.weight_ih_l0.copy_(onehot.rnn.weight_ih_l0)
    tokens = torch.randint(0, 15, (2, 6))
    assert torch.allclose(onehot(tokens)[0], wide(tokens)[0], atol=1e-6)


def test_onehot_is_refused_for_big_vocabularies_and_invalid_combinations():
    model_config = resolve(None, ["model.input=onehot"]).model
    with pytest.raises(ConfigError, match=r"20,000-dimensional one-hot.*model.input: embedding"):
        model_args(model_config, 20_000)
    with pytest.raises(ConfigError, match="model.tie_weights needs model.input: embedding"):
        resolve(None, ["model.input=onehot", "model.tie_weights=true", "model.embedding_dim=512"])
    with pytest.raises(ConfigError, match="model.embeddings_freeze needs model.embeddings_path"):
        resolve(None, ["model.embeddings_freeze=true"])


def test_cli_trains_and_samples_a_onehot_char_model(tmp_path, corpus):
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, model={"input": "onehot"}))
    assert result.exit_code == 0, result.stderr
    assert json.loads(run_cli("info", tmp_path / "run", "--json").stdout)["input"] == "onehot"
    sample = run_cli("sample", "--run", tmp_path / "run", "--seed", "the", "--length", "10", "--random-seed", "1")
    assert sample.exit_code == 0 and sample.stdout.startswith("the")


# --------------------------------------------------------------------------- vector files

VOCAB = ["<unk>", "the", "The", "Cat", "dog", "\n", "Zebra"]
FILE_VECTORS = [  # file order matters: the first casing found wins
    ("the", [0.5, -1.0, 2.0]),
    ("Cat dog", [9.0, 9.0, 9.0]),  # a word with a space (as in GloVe 840B): must not be read as "Cat"
    ("other", [1.0, 1.0, 1.0]),
    ("cat", [0.25, 0.75, -0.5]),
    ("Dog", [3.0, 3.0, 3.0]),
    ("dog", [-2.0, 0.0, 4.0]),
    ("zebras", [7.0, 7.0, 7.0]),
]
EXPECTED = {1: [0.5, -1.0, 2.0], 2: [0.5, -1.0, 2.0], 3: [0.25, 0.75, -0.5], 4: [-2.0, 0.0, 4.0]}


def text_lines(vectors):
    return "".join(f"{word} {' '.join(str(v) for v in values)}\n" for word, values in vectors)


def write_glove(path, vectors=FILE_VECTORS):
    path.write_text(text_lines(vectors), encoding="utf-8")
    return path


def write_glove_gz(path):
    path = path.with_suffix(".txt.gz")
    path.write_bytes(gzip.compress(text_lines(FILE_VECTORS).encode("utf-8")))
    return path


def write_word2vec_text(path):
    path.write_text(f"{len(FILE_VECTORS)} 3\n" + text_lines(FILE_VECTORS), encoding="utf-8")
    return path


def write_word2vec_binary(path, newline=True):
    records = b"".join(
        word.encode("utf-8") + b" " + struct.pack("<3f", *values) + (b"\n" if newline else b"")
        for word, values in FILE_VECTORS
        if " " not in word  # the binary format ends a word at its first space
    )
    path.write_bytes(f"{len(FILE_VECTORS) - 1} 3\n".encode() + records)
    return path


WRITERS = {
    "GloVe text": write_glove,
    "GloVe text (gzip)": write_glove_gz,
    "word2vec text": write_word2vec_text,
    "word2vec binary": write_word2vec_binary,
    "word2vec binary, no newlines": lambda path: write_word2vec_binary(path, newline=False),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_vector_files_are_parsed_and_matched_exactly_then_ignoring_case(tmp_path, kind):
    path = WRITERS[kind](tmp_path / "vectors.txt")
    vectors, coverage = read_vectors(str(path), VOCAB, 3)
    assert coverage.format == kind.split(" (")[0].split(",")[0]
    assert {i: v.tolist() for i, v in vectors.items()} == EXPECTED
    assert (coverage.words, coverage.exact, coverage.ignoring_case) == (6, 2, 2)  # the, dog; The, Cat
    assert coverage.missing == ["\n", "Zebra"]


def test_vector_file_errors_name_the_key_the_file_and_the_fix(tmp_path):
    path = write_glove(tmp_path / "glove.txt")
    with pytest.raises(ConfigError, match=r"model.embeddings_path: .*glove.txt holds 3-dimensional vectors but model.embedding_dim is 4"):  # fmt: skip
        read_vectors(str(path), VOCAB, 4)
    with pytest.raises(ConfigError, match="does not exist"):
        read_vectors(str(tmp_path / "missing.txt"), VOCAB, 3)
    (tmp_path / "notes.txt").write_text("just some text\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not a word-vector file"):
        read_vectors(str(tmp_path / "notes.txt"), VOCAB, 3)
    (tmp_path / "cut.bin").write_bytes(write_word2vec_binary(tmp_path / "whole.bin").read_bytes()[:-7])
    with pytest.raises(ConfigError, match="truncated"):
        read_vectors(str(tmp_path / "cut.bin"), VOCAB, 3)


# --------------------------------------------------------------------------- training from vectors

CORPUS_WORDS = ["the", "cat", "sat", "on", "mat", "dog", "log", "a", "and", "ran", "to", "bird", "sang", "in", "tree"]


def embedding_table(path):
    return checkpoint.load(path)[checkpoint.MODEL_STATE]["embedding.weight"]


def train_from_vectors(tmp_path, corpus, freeze: bool, steps: int = 10):
    torch.manual_seed(0)
    vectors = [(word, torch.randn(16).tolist()) for word in CORPUS_WORDS]  # "park", "." and "\n" get none
    path = write_glove(tmp_path / "glove.16d.txt", vectors)
    config = tiny_config(
        tmp_path,
        corpus,
        data={"level": "word"},
        model={"embeddings_path": str(path), "embeddings_freeze": freeze},
        train={"max_steps": steps, "lr": 0.01},
    )
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return config, result, dict(vectors)


def test_pretrained_vectors_fill_the_table_report_coverage_and_freeze_really_freezes(tmp_path, corpus):
    config, result, vectors = train_from_vectors(tmp_path, corpus, freeze=True)
    assert "15 of 18 vocabulary words (83.3%) have a pre-trained vector from glove.16d.txt" in result.stderr
    last = tmp_path / "run" / "last.pt"
    before = embedding_table(last)
    tokens = checkpoint.load(last)[checkpoint.VOCAB]["tokens"]
    for word, values in vectors.items():
        assert torch.equal(before[tokens.index(word)], torch.tensor(values))  # untouched by 10 steps

    resumed = run_cli("train", "--config", config, "--resume", "--set", "train.max_steps=20")
    assert resumed.exit_code == 0, resumed.stderr
    assert "pre-trained vector" not in resumed.stderr  # read once, when the run started
    after = checkpoint.load(last)
    assert after[checkpoint.SUMMARY]["step"] == 20
    assert torch.equal(after[checkpoint.MODEL_STATE]["embedding.weight"], before)  # still frozen after the resume
    info = json.loads(run_cli("info", tmp_path / "run", "--json").stdout)
    assert info["embeddings"].startswith("15 of 18 vocabulary words") and "frozen" in info["embeddings"]


def test_pretrained_vectors_keep_training_unless_frozen(tmp_path, corpus):
    _, _, vectors = train_from_vectors(tmp_path, corpus, freeze=False)
    table = embedding_table(tmp_path / "run" / "last.pt")
    tokens = checkpoint.load(tmp_path / "run" / "last.pt")[checkpoint.VOCAB]["tokens"]
    row = tokens.index("the")
    assert not torch.equal(table[row], torch.tensor(vectors["the"]))
    assert torch.allclose(table[row], torch.tensor(vectors["the"]), atol=0.2)  # started from it

"""`rnngen export --format onnx`: the graph against PyTorch in onnxruntime, the files, the refusals, and the
stand-alone sampling script of docs/export.md run as a user would run it."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnngen import api
from rnngen.models.state import state_tensors
from tests.conftest import learnable_text, run_cli, tiny_config

pytest.importorskip("onnxruntime")
import onnxruntime  # noqa: E402

DOC = Path(__file__).parent.parent / "docs" / "export.md"
# every cell at every level; one-hot input, relu, two layers, adaptive softmax, tied and spelled word vectors among them
MODELS = {
    "lstm-char": ({"level": "char"}, {"cell": "lstm", "num_layers": 2}),
    "lstm-word": ({"level": "word"}, {"cell": "lstm", "output": "adaptive", "adaptive_cutoffs": [10],
                                      "tie_weights": True, "spelling": True, "embedding_dim": 32}),
    "lstm-subword": ({"level": "subword", "vocab_size": 300}, {"cell": "lstm"}),
    "gru-char": ({"level": "char"}, {"cell": "gru", "input": "onehot"}),
    "gru-word": ({"level": "word"}, {"cell": "gru", "num_layers": 2}),
    "gru-subword": ({"level": "subword", "vocab_size": 300}, {"cell": "gru"}),
    "rnn-char": ({"level": "char"}, {"cell": "rnn", "nonlinearity": "relu"}),
    "rnn-word": ({"level": "word"}, {"cell": "rnn"}),
    "rnn-subword": ({"level": "subword", "vocab_size": 300}, {"cell": "rnn", "num_layers": 2}),
}  # fmt: skip
SEEDS = {"char": "the ca", "word": "the dog sat", "subword": "the bird"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (run directory, export directory), each model trained briefly and exported once."""
    root = tmp_path_factory.mktemp("export")
    corpus = root / "corpus.txt"
    corpus.write_text(learnable_text(), encoding="utf-8")
    found = {}
    for name, (data, model) in MODELS.items():
        config = tiny_config(root / name, corpus, data=data, model=model,
                             train={"max_steps": 60, "eval_every": 60, "lr": 0.01, "sample_length": 0})  # fmt: skip
        assert run_cli("train", "--config", config).exit_code == 0
        out = run_cli("export", root / name / "run", "--format", "onnx", "--out", root / name / "onnx")
        assert out.exit_code == 0, out.stderr
        assert out.stdout.splitlines() == [str(root / name / "onnx" / f) for f in ("model.onnx", "model.json")]
        found[name] = (root / name / "run", root / name / "onnx")
    return found


@pytest.mark.parametrize("name", MODELS)
def test_graph_scores_and_state_equal_pytorch_for_50_steps(exported, name):
    run, out = exported[name]
    model = api.load(run).module
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [spec["name"] for spec in meta["inputs"]]
    batch, generator = 3, torch.Generator().manual_seed(1)
    expected_state = model.initial_state(batch)
    state = [t.numpy() for t in state_tensors(expected_state)]
    worst = 0.0
    for _ in range(50):  # each side carries its own state
        ids = torch.randint(0, len(meta["vocab"]["tokens"]), (batch,), generator=generator)
        with torch.no_grad():
            logits, expected_state = model(ids[:, None], expected_state)
        scores, *state = session.run(None, dict(zip(names, [ids.numpy(), *state])))
        for got, want in zip([scores, *state], [logits[:, 0], *state_tensors(expected_state)]):
            worst = max(worst, float(np.abs(got - want.numpy()).max()))
    assert worst < 1e-4, worst
    assert meta["scores"] == ("log_probs" if name == "lstm-word" else "logits")
    assert [spec["name"] for spec in meta["outputs"]][1:] == [n + "_next" for n in names[1:]]


def test_batch_is_a_dynamic_dimension(exported):
    _, out = exported["lstm-char"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        state = np.zeros((2, batch, 32), np.float32)
        scores, h, c = session.run(None, {"token_ids": np.arange(batch, dtype=np.int64), "h": state, "c": state})
        assert scores.shape[0] == batch and h.shape == c.shape == (2, batch, 32)


def doc_script() -> str:
    block = re.search(r"## Sampling with onnxruntime.*?```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, "docs/export.md must hold the stand-alone sampling script"
    return block.group(1)


def test_doc_script_imports_neither_torch_nor_rnngen():
    tree = ast.parse(doc_script())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"argparse", "codecs", "json", "re", "pathlib", "numpy", "onnxruntime", "tokenizers"}


@pytest.mark.parametrize("name", ["lstm-char", "lstm-word", "gru-word", "rnn-subword"])
def test_doc_script_writes_the_greedy_text_of_rnngen_sample(exported, name, tmp_path):
    """The script from docs/export.md, run in a subprocess where torch and rnngen cannot be imported."""
    run, out = exported[name]
    script = tmp_path / "sample_onnx.py"
    script.write_text(doc_script(), encoding="utf-8")
    for blocked in ("torch", "rnngen"):  # stand-ins that fail on import: the script must need neither
        (tmp_path / "blocked" / blocked).mkdir(parents=True)
        (tmp_path / "blocked" / blocked / "__init__.py").write_text(f"raise ImportError('{blocked} imported')\n")
    seed = SEEDS[json.loads((out / "model.json").read_text(encoding="utf-8"))["vocab"]["level"]]
    args = ["--seed", seed, "--length", "40", "--temperature", "0"]
    proc = subprocess.run([sys.executable, str(script), str(out), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "blocked")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = run_cli("sample", "--run", run, *args)
    assert expected.exit_code == 0, expected.stderr
    assert proc.stdout == expected.stdout
    assert len(set(proc.stdout)) > 3  # trained enough to write more than one repeated token


def test_model_json_holds_what_a_program_needs(exported):
    run, out = exported["rnn-subword"]
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    vocab = api.load(run).vocab
    assert meta["vocab"]["tokens"] == vocab.tokens and meta["vocab"]["level"] == "subword"
    assert json.loads(meta["tokenizer"]["bpe"]) == json.loads(vocab.tokenizer)
    assert meta["sampling"]["length"] == 30 and meta["sampling"]["temperature"] == 0.8  # the checkpoint's sample:
    word = json.loads((exported["gru-word"][1] / "model.json").read_text(encoding="utf-8"))
    assert re.findall(word["tokenizer"]["pattern"], "don't stop, 3.14!") == ["don't", "stop", ",", "3.14", "!"]


def one_error_line(result) -> str:
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_out_directory_rules_never_lose_a_file(exported, tmp_path):
    run, _ = exported["rnn-char"]
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert "already holds other files (notes.txt)" in one_error_line(run_cli("export", run, "--out", keep))
    assert "already holds other files" in one_error_line(run_cli("export", run, "--out", keep, "--overwrite"))
    assert (keep / "notes.txt").read_text() == "mine" and sorted(p.name for p in keep.iterdir()) == ["notes.txt"]
    assert "is a file" in one_error_line(run_cli("export", run, "--out", keep / "notes.txt"))
    assert "could not write" in one_error_line(run_cli("export", run, "--out", keep / "notes.txt" / "sub"))
    out = tmp_path / "exported"
    assert run_cli("export", run, "--out", out).exit_code == 0
    assert "--overwrite" in one_error_line(run_cli("export", run, "--out", out))
    again = run_cli("export", run, "--out", out, "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "mine"]  # no temporary left beside it


def test_refusals_are_one_error_line(exported, tmp_path, corpus):
    run, _ = exported["rnn-char"]
    assert "--format tflite" in one_error_line(run_cli("export", run, "--format", "tflite", "--out", tmp_path / "x"))
    config = tiny_config(tmp_path, corpus, model={"cell": "ngram", "order": 3})
    assert run_cli("train", "--config", config).exit_code == 0
    assert "ngram" in one_error_line(run_cli("export", tmp_path / "run", "--out", tmp_path / "n"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "n").exists()


def test_missing_extra_names_the_install_command(exported, tmp_path):
    run, _ = exported["rnn-char"]
    (tmp_path / "blocked" / "onnxscript").mkdir(parents=True)
    (tmp_path / "blocked" / "onnxscript" / "__init__.py").write_text("raise ImportError('not installed')\n")
    proc = subprocess.run([sys.executable, "-m", "rnngen", "export", str(run), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "blocked")})  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "Error: rnngen export needs onnx, onnxruntime and onnxscript, which are not installed; "
        "install them with: pip install 'rnngen[export]'"
    )

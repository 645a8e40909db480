"""sample.precision: bf16 and int8 weights for the one-token steps, against fp32 on trained tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from rnngen import api
from rnngen.models import precision
from rnngen.models.cpu_single_step import CPUStepper, stepper_for
from rnngen.models.recurrent import RNNLM
from rnngen.models.state import state_tensors
from tests.conftest import learnable_text, run_cli, tiny_config, train_char_and_word
from tests.test_serve import Server

BF16 = pytest.mark.skipif(not precision.bf16_supported(), reason="this CPU has no bf16 instructions")
# measured on these models (hidden 160, 120 steps; the output layer is small and stays fp32): int8 moves a
# logit by at most 0.09 and a probability by 0.005, bf16 by 0.02 and 0.001 (logits span about +-14); the
# limits leave twice that
TOLERANCE = {"bf16": (0.05, 0.003), "int8": (0.2, 0.01)}
LOWER = [pytest.param("bf16", marks=BF16), "int8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Big enough that the recurrent matrix is converted (precision.MIN_CONVERTED_WEIGHTS): 640 x 176 weights."""
    return train_char_and_word(tmp_path_factory.mktemp("precision"), hidden_size=160, max_steps=120)


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("name", LOWER)
def test_scores_stay_within_the_tolerance_of_fp32(trained, level, name):
    model = api.load(trained[level])
    ids = torch.tensor([model.vocab.encode(model.vocab.split(learnable_text(3)))])  # (1, T) of the training text
    with torch.no_grad():
        expected, _ = model.module(ids)
    got, _ = CPUStepper(model.module, name)(ids)
    logit_limit, prob_limit = TOLERANCE[name]
    assert (got - expected).abs().max() < logit_limit
    assert (got.softmax(-1) - expected.softmax(-1)).abs().max() < prob_limit
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("level", ["char", "word"])
def test_greedy_text_is_the_same_at_every_precision(trained, level):
    args = ("--seed", "the " if level == "char" else "the dog", "--length", "200", "--temperature", "0")
    texts = {}
    for name in ("fp32", "bf16", "int8") if precision.bf16_supported() else ("fp32", "int8"):
        out = run_cli("sample", "--run", trained[level], *args, "--precision", name)
        assert out.exit_code == 0, out.stderr
        texts[name] = out.stdout
    assert len(set(texts.values())) == 1, texts


def test_precision_from_the_set_flag_config_and_api(trained, tmp_path):
    run = trained["char"]
    args = ("--seed", "the ", "--length", "30", "--random-seed", "1", "--format", "jsonl")
    by_set = json.loads(run_cli("sample", "--run", run, *args, "--set", "sample.precision=int8").stdout)
    assert by_set["settings"]["precision"] == "int8"
    flag = json.loads(
        run_cli("sample", "--run", run, *args, "--set", "sample.precision=int8", "--precision", "fp32").stdout
    )
    assert flag["settings"]["precision"] == "fp32"  # the flag wins over --set
    config = tmp_path / "s.yaml"
    config.write_text(f"train:\n  out_dir: {run}\nsample:\n  precision: int8\n")
    by_config = json.loads(run_cli("sample", "--config", config, *args).stdout)
    assert by_config["settings"]["precision"] == "int8" and by_config["text"] == by_set["text"]
    (from_api,) = api.load(run).sample("the ", length=30, random_seed=1, precision="int8")
    assert from_api.text == by_set["text"]


def test_bf16_is_refused_where_the_cpu_lacks_it(trained, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)  # a CPU without bf16 is not at hand
    out = run_cli("sample", "--run", trained["char"], "--precision", "bf16")
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.startswith("Error: sample.precision bf16 needs a CPU with bf16 instructions")
    assert len(out.stderr.strip().splitlines()) == 1


def test_an_ngram_model_takes_fp32_only(tmp_path, corpus):
    assert (
        run_cli("train", "--config", tiny_config(tmp_path, corpus, model={"cell": "ngram", "order": 3})).exit_code == 0
    )
    out = run_cli("sample", "--run", tmp_path / "run", "--precision", "int8")
    assert out.exit_code == 2 and "n-gram" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert run_cli("sample", "--run", tmp_path / "run", "--length", "5").exit_code == 0


def test_weights_are_converted_once_per_version_of_the_weights(trained):
    module = api.load(trained["char"]).module
    first = stepper_for(module, "int8")
    assert stepper_for(module, "int8") is first and stepper_for(module, "fp32") is not first
    with torch.no_grad():
        module.head.bias.add_(1.0)  # as a training step does between two evaluation samples
    assert stepper_for(module, "int8") is not first
    assert first.weight_bytes < stepper_for(module, "fp32").weight_bytes / 3  # int8: a quarter, plus the scales


def test_serve_runs_at_its_precision(trained):
    server = Server("--run", trained["char"], "--precision", "int8")
    try:
        assert server.client.get("/v1/model").json()["precision"] == "int8"
        request = {"seed": "the ", "length": 60, "temperature": 0}
        text = server.post(request).json()["samples"][0]["text"]
        refused = server.post({**request, "precision": "fp32"})  # one precision for the whole server
        assert refused.status_code == 422 and "precision" in refused.json()["error"]
    finally:
        server.stop()
    alone = run_cli("sample", "--run", trained["char"], "--seed", "the ", "--length", "60", "--temperature", "0",
                    "--precision", "int8", "--no-include-seed")  # fmt: skip
    assert text + "\n" == alone.stdout


@pytest.mark.parametrize("name", LOWER)
@pytest.mark.parametrize(
    "kind",
    [{"cell": "gru"}, {"cell": "rnn", "nonlinearity": "relu"}, {"cell": "lstm", "input": "onehot"},
     {"cell": "lstm", "output": "adaptive", "cutoffs": [20], "tie_weights": True}],
    ids=["gru", "rnn-relu", "lstm-onehot", "lstm-adaptive-tied"],
)  # fmt: skip
def test_every_cell_and_layer_kind_runs_converted(name, kind):
    """Untrained models with matrices big enough to convert: the converted steps follow the fp32 model."""
    torch.manual_seed(0)
    args = {"vocab_size": 60, "cell": "lstm", "embedding_dim": 192, "hidden_size": 192, "num_layers": 2,
            "dropout": 0.0, "tie_weights": False, **kind}  # fmt: skip
    model = RNNLM(**args).eval()
    stepper = CPUStepper(model, name)
    assert stepper.weight_bytes < CPUStepper(model, "fp32").weight_bytes
    ids = torch.randint(1, 60, (2, 12))
    with torch.no_grad():
        expected, expected_state = model(ids)
    got, state = stepper(ids)
    assert (got.softmax(-1) - expected.softmax(-1)).abs().max() < TOLERANCE[name][1]
    for a, b in zip(state_tensors(state), state_tensors(expected_state)):
        assert (a - b).abs().max() < 0.05

"""Weight averaging (train.average): what is evaluated and saved, what is trained, and exact resumes."""

from __future__ import annotations

import pytest
import torch

from rnngen import api, checkpoint
from tests.conftest import learnable_text, run_cli, tiny_config
from tests.test_train import metrics

COMMON = {"decay_steps": 20, "eval_every": 5, "save_every": 5, "lr": 0.03}


@pytest.fixture
def overfitting(tmp_path):
    """A text whose last tenth (the validation split) is unlike the rest: validation soon stops improving."""
    text = learnable_text()
    odd = "".join(sorted(set(text)))  # every character once, in an order the training text never has
    path = tmp_path / "overfitting.txt"
    path.write_text(text + odd * (len(text) // 9 // len(odd) + 1), encoding="utf-8")
    return path


def trained(tmp_path, corpus, name, **train):
    config = tiny_config(tmp_path / name, corpus, train={**COMMON, "out_dir": str(tmp_path / name / "run"), **train})
    result = run_cli("train", "--config", config)
    assert result.exit_code == 0, result.stderr
    return config, tmp_path / name / "run"


def states(run, name="last.pt"):
    saved = checkpoint.load(run / name)
    return saved[checkpoint.MODEL_STATE], saved.get(checkpoint.TRAINED_STATE), saved


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_changes_the_evaluated_weights_and_not_the_trained_ones(tmp_path, corpus):
    _, plain = trained(tmp_path, corpus, "plain", max_steps=20)
    _, ema = trained(tmp_path, corpus, "ema", max_steps=20, average="ema", ema_decay=0.8)
    plain_weights, none, _ = states(plain)
    averaged, raw, saved = states(ema)
    assert none is None  # without averaging last.pt holds one set of weights, as before
    assert equal(raw, plain_weights), "averaging must not change what is trained"
    assert not equal(averaged, plain_weights)
    assert saved[checkpoint.SUMMARY]["averaged_steps"] == 20
    # validation, best.pt and sampling use the average: the validation figure is the average's
    model = api.load(ema / "last.pt")
    assert equal(model.module.state_dict(), averaged)
    val = [float(r["val_loss"]) for r in metrics(ema) if r["val_loss"]][-1]
    assert model.evaluate(batch_size=16).loss == pytest.approx(val, rel=1e-5)
    assert [float(r["train_loss"]) for r in metrics(ema) if r["train_loss"]] == [
        float(r["train_loss"]) for r in metrics(plain) if r["train_loss"]
    ]


def test_nt_asgd_waits_for_validation_to_stall(tmp_path, corpus, overfitting):
    _, never = trained(tmp_path, corpus, "never", max_steps=20, average="nt-asgd", average_patience=50)
    weights, raw, saved = states(never)
    assert raw is None and saved[checkpoint.SUMMARY]["averaged_steps"] == 0
    _, plain = trained(tmp_path, corpus, "plain", max_steps=20)
    assert equal(weights, states(plain)[0]), "before the trigger the weights in use are the trained ones"

    _, stalled = trained(tmp_path, overfitting, "stalled", max_steps=20, lr=0.01, average="nt-asgd", average_patience=1)
    weights, raw, saved = states(stalled)
    state = saved[checkpoint.TRAINER_STATE]
    assert state["averaging_since"] == 10  # evaluations at 5 and 10: no improvement at 10, patience 1
    assert state["averaged_steps"] == 10 and raw is not None


@pytest.mark.parametrize("average", ["ema", "nt-asgd"])
def test_resume_with_averaging_is_exact(tmp_path, overfitting, average):
    extra = {"average": average, "ema_decay": 0.8, "average_patience": 1, "lr": 0.01}  # nt-asgd starts at step 10
    _, straight = trained(tmp_path, overfitting, "a", max_steps=20, **extra)
    halves, split = trained(tmp_path, overfitting, "b", max_steps=10, **extra)
    result = run_cli("train", "--config", halves, "--resume", "--set", "train.max_steps=20")
    assert result.exit_code == 0, result.stderr
    a_weights, a_raw, a = states(straight)
    b_weights, b_raw, b = states(split)
    assert a_raw is not None and equal(a_raw, b_raw)
    assert equal(a_weights, b_weights)
    assert a[checkpoint.SUMMARY]["val"]["loss"] == b[checkpoint.SUMMARY]["val"]["loss"]
    assert a[checkpoint.TRAINER_STATE]["averaged_steps"] == b[checkpoint.TRAINER_STATE]["averaged_steps"]


def test_a_checkpoint_from_before_averaging_resumes_with_it(tmp_path, corpus):
    config, run = trained(tmp_path, corpus, "old", max_steps=10)
    result = run_cli(
        "train", "--config", config, "--resume", "--set", "train.max_steps=20", "--set", "train.average=ema"
    )
    assert result.exit_code == 0, result.stderr
    averaged, raw, saved = states(run)
    assert raw is not None and not equal(averaged, raw)
    assert saved[checkpoint.TRAINER_STATE]["averaging_since"] == 10

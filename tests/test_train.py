import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnngen import checkpoint
from rnngen.config import TrainConfig
from rnngen.fileio import write_text
from rnngen.training.trainer import learning_rate, schedule_progress
from tests.conftest import run_cli, tiny_config


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def train(tmp_path, corpus, *extra, **sections):
    config = tiny_config(tmp_path, corpus, **sections)
    return run_cli("train", "--config", config, *extra), tmp_path / "run"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_learns_well_below_uniform(tmp_path, corpus, cell):
    result, run = train(
        tmp_path, corpus,
        model={"cell": cell, "hidden_size": 64},
        train={"max_steps": 150, "eval_every": 150, "lr": 0.01, "batch_size": 8, "seq_len": 32},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    ckpt = checkpoint.load(run / "best.pt")
    vocab_size = len(ckpt[checkpoint.VOCAB]["tokens"])
    best = ckpt[checkpoint.SUMMARY]["best_val_loss"]
    assert best < 0.5 * math.log(vocab_size), (best, math.log(vocab_size))
    assert result.stdout.strip() == str(run / "best.pt")


def test_run_directory_contents(tmp_path, corpus):
    result, run = train(tmp_path, corpus)
    assert result.exit_code == 0, result.stderr
    assert {"config.yaml", "last.pt", "best.pt", "metrics.csv", "samples", "prepared"} <= {
        p.name for p in run.iterdir()
    }
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000010.txt", "step-0000020.txt"]
    rows = metrics(run)
    assert [r["step"] for r in rows] == ["5", "10", "15", "20"]
    assert rows[1]["val_loss"] and rows[1]["val_bpc"] and rows[1]["val_ppl"] and rows[0]["tokens_per_s"]
    assert (tmp_path / "LATEST").read_text().strip() == str(run.resolve())


def test_checkpoints_load_with_weights_only(tmp_path, corpus):
    _, run = train(tmp_path, corpus)
    for name in ("last.pt", "best.pt"):
        payload = torch.load(run / name, weights_only=True)
        assert payload["format"] == "rnngen-checkpoint"
        assert payload["vocab"]["level"] == "char" and payload["config"]["model"]["hidden_size"] == 32
    assert "optimizer_state" in torch.load(run / "last.pt", weights_only=True)


def test_stop_conditions(tmp_path, corpus):
    result, run = train(tmp_path, corpus, train={"max_steps": None, "max_epochs": 0.5, "eval_every": 1000})
    windows = checkpoint.load(run / "last.pt")[checkpoint.TRAINER_STATE]
    assert result.exit_code == 0 and "reached max_epochs 0.5" in result.stderr, result.stderr
    assert windows["epoch"] == 0 and windows["window"] > 0

    result, _ = train(tmp_path, corpus, "--overwrite", train={"max_steps": None, "max_minutes": 0.002})
    assert "reached max_minutes" in result.stderr

    result, _ = train(tmp_path, corpus, "--overwrite", train={"target_loss": 100.0, "eval_every": 3})
    assert "reached target_loss 100" in result.stderr
    assert checkpoint.load(tmp_path / "run" / "last.pt")[checkpoint.TRAINER_STATE]["step"] == 3

    frozen = {"optimizer": "sgd", "lr": 1e-30, "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant",
              "warmup_steps": 0, "patience": 2, "eval_every": 2, "max_steps": 100}  # fmt: skip
    result, _ = train(tmp_path, corpus, "--overwrite", train=frozen)
    assert "no improvement in 2 evaluations" in result.stderr
    assert checkpoint.load(tmp_path / "run" / "last.pt")[checkpoint.TRAINER_STATE]["step"] == 6


def test_gradient_clipping_is_logged(tmp_path, corpus):
    result, run = train(tmp_path, corpus, train={"grad_clip": 1e-4})
    assert result.exit_code == 0
    rows = metrics(run)
    assert all(float(r["clip_rate"]) == 1.0 for r in rows if r["clip_rate"])
    assert all(float(r["grad_norm"]) > 1e-4 for r in rows if r["grad_norm"])
    result, run = train(tmp_path, corpus, "--overwrite", train={"grad_clip": None})
    assert all(float(r["clip_rate"]) == 0.0 for r in metrics(run) if r["clip_rate"])


def test_non_finite_loss_is_skipped_then_stops_cleanly(tmp_path, corpus):
    wild = {"optimizer": "sgd", "lr": 1e12, "grad_clip": None, "warmup_steps": 0, "lr_schedule": "constant",
            "max_steps": 300}  # fmt: skip
    result, run = train(tmp_path, corpus, train=wild)
    assert result.exit_code == 1, result.stderr
    assert "skipped the update and halved the learning rate" in result.stderr
    assert "Error: the loss was non-finite in 5 of the last steps" in result.stderr
    assert "Traceback" not in result.stderr
    state = checkpoint.load(run / "last.pt")[checkpoint.MODEL_STATE]
    assert all(torch.isfinite(t).all() for t in state.values())  # skipped steps never touch the weights


def test_stateful_vs_reset_hidden_state(tmp_path, corpus):
    """Window 0 starts from zeros either way; from window 1 on, only the stateful run carries the state."""
    weights = {}
    for steps in (1, 2):
        for reset in (False, True):
            name = f"{steps}-{reset}"
            config = tiny_config(tmp_path / name, corpus,
                                 train={"max_steps": steps, "eval_every": 100, "reset_state": reset, "out_dir": str(tmp_path / name / "run")})  # fmt: skip
            assert run_cli("train", "--config", config).exit_code == 0
            weights[steps, reset] = checkpoint.load(tmp_path / name / "run" / "last.pt")[checkpoint.MODEL_STATE]
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(weights[1, False], weights[1, True])  # one window: nothing carried yet
    assert not same(weights[2, False], weights[2, True])  # the second window saw the carried state
    assert checkpoint.load(tmp_path / "2-False/run/last.pt")[checkpoint.TRAINER_STATE]["hidden"] is not None


def test_refuses_to_overwrite_a_run(tmp_path, corpus):
    train(tmp_path, corpus)
    result, _ = train(tmp_path, corpus)
    assert result.exit_code == 2
    assert "already holds a training run" in result.stderr and "--resume" in result.stderr
    result, _ = train(tmp_path, corpus, "--overwrite")
    assert result.exit_code == 0


def test_resume_is_exact(tmp_path, corpus):
    common = {"decay_steps": 20, "eval_every": 5, "save_every": 5}
    sections = {"model": {"dropout": 0.3, "num_layers": 2}}
    straight = tiny_config(
        tmp_path / "a", corpus, train={**common, "max_steps": 20, "out_dir": str(tmp_path / "a/run")}, **sections
    )
    assert run_cli("train", "--config", straight).exit_code == 0
    halves = tiny_config(
        tmp_path / "b", corpus, train={**common, "max_steps": 10, "out_dir": str(tmp_path / "b/run")}, **sections
    )
    assert run_cli("train", "--config", halves).exit_code == 0
    result = run_cli("train", "--config", halves, "--resume", "--set", "train.max_steps=20")
    assert result.exit_code == 0, result.stderr
    assert "resuming" in result.stderr and "at step 10" in result.stderr
    a = checkpoint.load(tmp_path / "a/run/last.pt")
    b = checkpoint.load(tmp_path / "b/run/last.pt")
    for key, tensor in a[checkpoint.MODEL_STATE].items():
        assert torch.equal(tensor, b[checkpoint.MODEL_STATE][key]), key
    assert a[checkpoint.SUMMARY]["val"]["loss"] == b[checkpoint.SUMMARY]["val"]["loss"]
    assert [r["train_loss"] for r in metrics(tmp_path / "a/run")] == [
        r["train_loss"] for r in metrics(tmp_path / "b/run")
    ]


def test_resume_keeps_checkpoint_architecture(tmp_path, corpus):
    train(tmp_path, corpus, train={"max_steps": 5})
    config = tiny_config(tmp_path, corpus, model={"hidden_size": 64}, train={"max_steps": 8})
    result = run_cli("train", "--config", config, "--resume")
    assert result.exit_code == 0, result.stderr
    assert "keeps the checkpoint's model settings; ignoring changes to hidden_size" in result.stderr
    assert checkpoint.load(tmp_path / "run/last.pt")[checkpoint.MODEL_ARGS]["hidden_size"] == 32


def test_resume_without_checkpoint(tmp_path, corpus):
    result, _ = train(tmp_path, corpus, "--resume")
    assert result.exit_code == 2 and "nothing to resume" in result.stderr


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    from rnngen.fileio import atomic_path

    target = tmp_path / "last.pt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-save")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_exits_130(tmp_path, corpus, sig):
    config = tiny_config(tmp_path, corpus, train={"max_steps": 100000, "eval_every": 100000, "save_every": 100000})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rnngen", "train", "--config", str(config)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    metrics_file = tmp_path / "run" / "metrics.csv"
    deadline = time.monotonic() + 60
    while not metrics_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume with:" in err and "--resume" in err and "Traceback" not in err
    step = checkpoint.load(tmp_path / "run" / "last.pt")[checkpoint.TRAINER_STATE]["step"]
    assert step >= 5
    result = run_cli("train", "--config", config, "--resume", "--set", f"train.max_steps={step + 3}")
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------- the schedule, as pure functions


def schedule(**keys):
    return dataclasses.replace(TrainConfig(), **keys)


def test_learning_rate_warms_up_linearly_then_follows_the_cosine_to_its_floor():
    t = schedule(lr=1.0, warmup_steps=4, min_lr_ratio=0.1, lr_schedule="cosine")
    assert [learning_rate(t, step, 0.0) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(t, 4, 0.0) == pytest.approx(1.0)
    assert learning_rate(t, 10, 0.5) == pytest.approx(0.55)  # halfway down the cosine
    assert learning_rate(t, 10, 1.0) == pytest.approx(0.1)
    for name in ("constant", "plateau"):  # no decay: the plateau's scaling is applied by the trainer
        assert learning_rate(schedule(lr=1.0, warmup_steps=4, lr_schedule=name), 100, 0.9) == 1.0


def test_schedule_progress_follows_the_nearest_limit():
    none = {"max_steps": None, "max_epochs": None, "max_minutes": None, "decay_steps": None}
    assert schedule_progress(schedule(**{**none, "max_steps": 100}), 25, 0.0, 10) == 0.25
    assert schedule_progress(schedule(**{**none, "max_epochs": 2}), 5, 0.0, 10) == 0.25  # 5 of 2 x 10 windows
    assert schedule_progress(schedule(**{**none, "max_minutes": 2}), 1, 60.0, 10) == 0.5
    both = schedule(**{**none, "max_steps": 100, "max_minutes": 2})
    assert schedule_progress(both, 10, 90.0, 10) == 0.75  # time runs out first
    assert schedule_progress(schedule(**{**none, "max_steps": 100, "decay_steps": 20}), 10, 0.0, 10) == 0.5
    assert schedule_progress(schedule(**{**none, "decay_steps": 20}), 40, 0.0, 10) == 1.0  # capped at the end
    assert schedule_progress(schedule(**none), 40, 0.0, 10) == 0.0  # no limit: no decay

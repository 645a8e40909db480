"""Training on several processes (torchrun + DDP, gloo on CPU), micro-batches and precision."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from rnngen import checkpoint
from tests.conftest import run_cli, tiny_config


def torchrun(config, *args, nproc=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "rnngen", "-v", "train", "--config", str(config), *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_weights(a, b, atol):
    state_a, state_b = checkpoint.load(a)[checkpoint.MODEL_STATE], checkpoint.load(b)[checkpoint.MODEL_STATE]
    return all(torch.allclose(state_a[k], state_b[k], atol=atol) for k in state_a)


def test_two_processes_train_one_model(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, train={"max_steps": 30, "eval_every": 10, "lr": 0.01})
    proc = torchrun(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 of 2: stopped at step 30" in proc.stderr and "rank 1 of 2: stopped at step 30" in proc.stderr
    run = tmp_path / "run"
    metrics = rows(run)
    steps = [int(r["step"]) for r in metrics]
    assert steps == sorted(set(steps)), "one writer: no duplicated rows"
    losses = [float(r["train_loss"]) for r in metrics if r["train_loss"]]
    assert losses[-1] < losses[0]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-0000010.txt",
        "step-0000020.txt",
        "step-0000030.txt",
    ]
    assert not [p for p in run.rglob(".*tmp*")], "no temporary files left behind"
    last = checkpoint.load(run / "last.pt")
    assert len(last["rng_per_rank"]) == 2
    assert last[checkpoint.TRAINER_STATE]["hidden"][0].shape[1] == 2 * 4  # both ranks' streams
    assert last[checkpoint.SUMMARY]["tokens"] == 30 * 2 * 4 * 16

    resumed = torchrun(config, "--resume", "--set", "train.max_steps=40")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and "at step 30" in resumed.stderr
    assert "rank 1 of 2: stopped at step 40" in resumed.stderr
    assert checkpoint.load(run / "last.pt")[checkpoint.TRAINER_STATE]["step"] == 40


def test_two_ranks_of_b_match_one_process_of_2b(tmp_path, corpus):
    """Rank r reads streams r*b..(r+1)*b-1 of the same 2b-stream layout, and DDP averages the two ranks'
    mean-loss gradients, which is the mean over all 2b streams: the same update as one process with
    batch 2b. Without dropout the weights agree up to float summation order."""
    train = {"max_steps": 8, "eval_every": 100, "save_every": 100, "lr": 0.01}
    two = tiny_config(tmp_path / "two", corpus, train={**train, "batch_size": 4, "out_dir": str(tmp_path / "two/run")})
    one = tiny_config(tmp_path / "one", corpus, train={**train, "batch_size": 8, "out_dir": str(tmp_path / "one/run")})
    assert torchrun(two).returncode == 0
    assert run_cli("train", "--config", one).exit_code == 0
    assert same_weights(tmp_path / "two/run/last.pt", tmp_path / "one/run/last.pt", atol=1e-5)


def test_micro_batches_give_the_same_update(tmp_path, corpus):
    train = {"max_steps": 6, "eval_every": 100, "batch_size": 8}
    for name, k in (("whole", 1), ("micro", 4)):
        config = tiny_config(
            tmp_path / name, corpus, train={**train, "grad_accum_steps": k, "out_dir": str(tmp_path / name / "run")}
        )
        assert run_cli("train", "--config", config).exit_code == 0
    assert same_weights(tmp_path / "whole/run/last.pt", tmp_path / "micro/run/last.pt", atol=1e-5)


def test_grad_accum_must_divide_batch(tmp_path, corpus):
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"batch_size": 6, "grad_accum_steps": 4}))
    assert result.exit_code == 2 and "must divide train.batch_size" in result.stderr


def test_precision_choices_on_cpu(tmp_path, corpus):
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"precision": "fp16"}))
    assert result.exit_code == 2 and "fp16 needs a CUDA GPU" in result.stderr
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"precision": "bf16", "max_steps": 4}))
    if result.exit_code == 2:  # CPUs without AVX-512 have no bf16 LSTM kernel: a clear refusal, not a crash
        assert "bf16 recurrent layers are not supported on this CPU" in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    assert torch.isfinite(torch.tensor(checkpoint.load(tmp_path / "run/last.pt")[checkpoint.SUMMARY]["val"]["loss"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_autocast(tmp_path, corpus):
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"device": "cuda", "max_steps": 4}))
    assert result.exit_code == 0, result.stderr


def test_validation_with_a_cache_is_the_same_on_two_ranks_as_on_one(tmp_path, corpus):
    """Each rank scores its own block of validation rows, each row with its own cache (the last rank also the
    tail), and the sums are added: the same figure as one process reading all the rows."""
    model = {"cache_size": 30, "cache_theta": 0.5, "cache_lambda": 0.2}
    train = {"max_steps": 8, "eval_every": 4, "save_every": 100, "lr": 0.01}
    two = tiny_config(
        tmp_path / "two",
        corpus,
        model=model,
        train={**train, "batch_size": 4, "eval_batch_size": 3, "out_dir": str(tmp_path / "two/run")},
    )
    one = tiny_config(tmp_path / "one", corpus, model=model,
                      train={**train, "batch_size": 8, "eval_batch_size": 6, "out_dir": str(tmp_path / "one/run")})  # fmt: skip
    assert torchrun(two).returncode == 0
    assert run_cli("train", "--config", one).exit_code == 0
    scored = [[float(r["val_loss"]) for r in rows(tmp_path / f"{n}/run") if r["val_loss"]] for n in ("two", "one")]
    assert len(scored[0]) == len(scored[1]) >= 2
    assert scored[0] == pytest.approx(scored[1], rel=1e-4)

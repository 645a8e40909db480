"""Faults never lose training: kills, signals, failed writes, unusable or shared run directories.

Rows of the Reliability tables in docs/reliability.md. Each test runs the real `rnngen train`, in a subprocess
where a signal, a kill or a resource limit has to reach it. bench/kill_soak.py runs the SIGKILL
trials at a larger scale.
"""

from __future__ import annotations

import csv
import os
import random
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnngen import checkpoint
from tests.conftest import run_cli, tiny_config

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_train(config: Path, *extra: str, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnngen", "train", "--config", str(config), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=preexec_fn,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until `path` exists (the run has got that far), failing early if the process ended."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def wait_for_save(last: Path, previous_save: int | None, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until this process has written last.pt (its mtime changed), or has ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if last.exists() and last.stat().st_mtime_ns != previous_save:
            return
        time.sleep(0.02)


def saved_step(path: Path) -> int:
    return checkpoint.load(path)[checkpoint.TRAINER_STATE]["step"]


# --------------------------------------------------------------------------- SIGKILL


def test_sigkill_at_random_moments_then_resume_matches_a_straight_run(tmp_path, corpus):
    """Kill -9 at random moments (start-up, prepare, steps, saves); every survivor loads and resumes.

    Every third trial kills during start-up; the others wait for this process's first save, then
    kill a random fraction of a second later, among training steps and checkpoint writes. Steps
    after the last save are recomputed from the saved RNG state and data position, so the run
    that was killed again and again ends with exactly the weights of one that never was.
    """
    settings = {"max_steps": 120, "save_every": 3, "eval_every": 15, "log_every": 15, "threads": 1}
    config = tiny_config(tmp_path / "killed", corpus, train=settings)
    run = tmp_path / "killed" / "run"
    rng = random.Random(9)
    last_step, kills, kills_after_a_save = 0, 0, 0
    for trial in range(6):
        previous_save = (run / "last.pt").stat().st_mtime_ns if (run / "last.pt").exists() else None
        proc = start_train(config, *(["--resume"] if previous_save else []))
        if trial % 3 == 0:
            time.sleep(rng.uniform(0.1, 2.0))  # start-up: imports, lock, prepare
        else:
            wait_for_save(run / "last.pt", previous_save, proc)
            time.sleep(rng.uniform(0.0, 0.2))
        proc.kill()
        _, err = proc.communicate()
        if proc.returncode == 0:  # finished before the kill came
            break
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        if (run / "last.pt").exists():  # else the kill came before the first save: nothing to lose yet
            step = saved_step(run / "last.pt")
            assert step >= last_step
            kills_after_a_save += step > 0
            last_step = step
        if (run / "best.pt").exists():
            checkpoint.load(run / "best.pt")
        if (run / "metrics.csv").exists():
            with open(run / "metrics.csv", newline="") as f:
                assert all(row["step"] for row in csv.DictReader(f))
    assert kills >= 3 and kills_after_a_save >= 2
    finish = run_cli("train", "--config", config, *(["--resume"] if (run / "last.pt").exists() else []))
    assert finish.exit_code == 0, finish.stderr
    straight = run_cli("train", "--config", tiny_config(tmp_path / "straight", corpus, train=settings))
    assert straight.exit_code == 0, straight.stderr
    killed = checkpoint.load(run / "last.pt")
    reference = checkpoint.load(tmp_path / "straight" / "run" / "last.pt")
    assert killed[checkpoint.TRAINER_STATE]["step"] == 120
    for name, weights in reference[checkpoint.MODEL_STATE].items():
        torch.testing.assert_close(killed[checkpoint.MODEL_STATE][name], weights, rtol=0, atol=1e-6)


def test_resume_of_a_run_killed_after_its_final_save(tmp_path, corpus):
    """A kill between the last save and the exit leaves a finished last.pt; --resume just closes the run."""
    config = tiny_config(tmp_path, corpus, train={"max_steps": 10, "eval_every": 10, "save_every": 10})
    assert run_cli("train", "--config", config).exit_code == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    again = run_cli("train", "--config", config, "--resume")
    assert again.exit_code == 0, again.stderr
    assert "stopped at step 10: reached max_steps 10" in again.stderr
    assert (tmp_path / "run" / "metrics.csv").read_text().splitlines() == rows  # no duplicate closing row
    assert saved_step(tmp_path / "run" / "last.pt") == 10


# --------------------------------------------------------------------------- SIGINT / SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_exits_130_and_the_printed_command_resumes(tmp_path, corpus, sig):
    """The printed resume command is a real shell command, even for a config path with a space in it."""
    home = tmp_path / "my runs"
    config = tiny_config(home, corpus, train={"max_steps": 100_000, "save_every": 100_000, "eval_every": 100_000})
    proc = start_train(config)
    wait_for(home / "run" / "metrics.csv", proc)  # a metrics row: training steps are running
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"{sig.name} received" in err and "Traceback" not in err
    step = saved_step(home / "run" / "last.pt")
    assert step >= 5
    command = err.split("resume with:\n", 1)[1].splitlines()[0]
    argv = shlex.split(command)
    assert argv[:2] == ["rnngen", "train"] and "--resume" in argv
    resumed = run_cli(*argv[1:], "--set", f"train.max_steps={step + 4}")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming {home / 'run'} at step {step:,}" in resumed.stderr
    assert saved_step(home / "run" / "last.pt") == step + 4


# --------------------------------------------------------------------------- failed writes


def test_file_too_large_while_saving_keeps_the_previous_checkpoint(tmp_path, corpus):
    """A real failed write, no mocks: RLIMIT_FSIZE makes the kernel refuse to grow last.pt (EFBIG)."""
    config = tiny_config(tmp_path, corpus, train={"max_steps": 10, "eval_every": 10, "save_every": 10})
    assert run_cli("train", "--config", config).exit_code == 0
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    limit = len(before) // 2  # room for config, metrics, samples and best.pt; not for last.pt

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start_train(config, "--resume", "--set", "train.max_steps=20", preexec_fn=limit_file_size)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert f"Error: could not write {last}: File too large; the previous version (if any) is intact" in err
    assert "Traceback" not in err and "unexpected" not in err
    assert last.read_bytes() == before and saved_step(last) == 10
    assert not [p.name for p in last.parent.iterdir() if ".tmp-" in p.name]  # no half-written file left
    again = run_cli("train", "--config", config, "--resume", "--set", "train.max_steps=20")
    assert again.exit_code == 0 and saved_step(last) == 20


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_output_directory_under_a_file(tmp_path, corpus, command):
    """out_dir=<a regular file>/run fails with ENOTDIR, for root too (chmod does not stop root)."""
    (tmp_path / "notes.txt").write_text("a file, not a directory\n")
    blocked = tmp_path / "notes.txt" / "run"
    if command == "train":
        result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"out_dir": str(blocked)}))
        setting = "train.out_dir"
    else:
        result = run_cli("prepare", corpus, "--out", blocked)
        setting = "data.prepared_dir"
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.stderr
    assert f"could not create directory {blocked}: Not a directory; set {setting}" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(tmp_path, corpus):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"out_dir": str(locked / "run")}))
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2 and "Permission denied; set train.out_dir" in result.stderr


def test_missing_output_directory_is_created(tmp_path, corpus):
    deep = tmp_path / "not" / "yet" / "there"
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, train={"out_dir": str(deep), "max_steps": 3}))
    assert result.exit_code == 0, result.stderr
    assert saved_step(deep / "last.pt") == 3


# --------------------------------------------------------------------------- shared run directory


def test_second_train_on_the_same_run_directory_is_refused(tmp_path, corpus):
    config = tiny_config(tmp_path, corpus, train={"max_steps": 100_000, "save_every": 100_000, "eval_every": 100_000})
    first = start_train(config)
    try:
        wait_for(tmp_path / "run" / "metrics.csv", first)
        second = run_cli("train", "--config", config, "--overwrite")
        assert second.exit_code == 2, second.stderr
        assert f"is in use by a training process (PID {first.pid})" in second.stderr
        assert "set a different train.out_dir" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 130  # the first run was not disturbed: it saved and stopped on request
    checkpoint.load(tmp_path / "run" / "last.pt")


# --------------------------------------------------------------------------- non-finite loss


@pytest.mark.parametrize("lr", [1e6, 1e30])
def test_huge_learning_rate_skips_steps_and_stops_cleanly(tmp_path, corpus, lr):
    """AdamW at an absurd learning rate: non-finite steps are skipped, lr lowered, and it says so."""
    config = tiny_config(tmp_path, corpus, train={"lr": lr, "warmup_steps": 0, "max_steps": 40})
    result = run_cli("train", "--config", config)
    assert result.exit_code in (0, 1), result.stderr
    assert "non-finite" in result.stderr and "halved the learning rate" in result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    if result.exit_code == 1:
        assert "Error: the loss was non-finite" in result.stderr and "Lower train.lr" in result.stderr
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(t).all() for t in saved[checkpoint.MODEL_STATE].values())
    scored = run_cli("evaluate", "--checkpoint", tmp_path / "run" / "last.pt", "--json")
    assert scored.exit_code == 0, scored.stderr
    assert "NaN" not in scored.stdout and "Infinity" not in scored.stdout  # the kept weights still work

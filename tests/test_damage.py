"""Damage fuzzer: every file rnngen reads back, damaged on disk, gets a clean answer.

Two tiny projects are made once with the real commands (prepare, train, sample --report-copying).
Each case copies project A, damages one artifact (cut short at a random offset, random bytes
flipped, emptied, swapped for the same file of project B, or deleted) and runs every command that
reads it. Each command must either exit 0 with the output of the undamaged project (the damage was
repaired, e.g. the prepared data prepared again from the sources, or was harmless) or exit 2 with
one `Error:` line naming the damaged file; never exit 1, never a traceback, never "unexpected";
and the sources (corpus, config, vectors) are never changed. Offsets and bytes come from a seeded
generator; RNNGEN_DAMAGE_ROUNDS=N runs N rounds with other offsets (the default is one round:
55 damaged files, 155 command runs).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from rnngen import checkpoint
from tests.conftest import SENTENCES, learnable_text, run_cli

ROUNDS = int(os.environ.get("RNNGEN_DAMAGE_ROUNDS", "1"))
RUN = "runs/tiny"
SOURCES = ("corpus.txt", "config.yaml", "vectors.txt")
SAMPLE = ("--random-seed", "1", "--length", "20")


@dataclass(frozen=True)
class Reader:
    name: str
    args: tuple[str, ...]
    exact: bool = True  # exit 0 must give the undamaged project's output


PREPARE = Reader("prepare", ("prepare", "--config", "config.yaml"))
RESUME = Reader("resume", ("train", "--config", "config.yaml", "--resume", "--set", "train.max_steps=8"))
EVALUATE = Reader("evaluate", ("evaluate", "--checkpoint", RUN, "--json"))
COPYING = Reader("copying", ("sample", "--run", RUN, *SAMPLE, "--report-copying", "--format", "jsonl"))
SAMPLE_BEST = Reader("sample-best", ("sample", "--run", RUN, *SAMPLE))
SAMPLE_LAST = Reader("sample-last", ("sample", "--checkpoint", f"{RUN}/last.pt", *SAMPLE))
INFO_BEST = Reader("info-best", ("info", RUN, "--json"))
INFO_LAST = Reader("info-last", ("info", f"{RUN}/last.pt", "--json"))
SAMPLE_LATEST = Reader("sample-latest", ("sample", *SAMPLE))
EVALUATE_LATEST = Reader("evaluate-latest", ("evaluate", "--json"))
PLOT = Reader("plot", ("plot", RUN, "-o", "curves.png"), exact=False)
SAMPLE_CONFIG = Reader("sample-config", ("sample", "--config", f"{RUN}/config.yaml", *SAMPLE), exact=False)
VECTORS = Reader(
    "vectors",
    ("train", "--config", "config.yaml", "--overwrite", "--set", "model.embeddings_path=vectors.txt",
     "--set", "train.max_steps=2"),
    exact=False,
)  # fmt: skip

PREPARED_READERS = (PREPARE, RESUME, EVALUATE, COPYING)
ARTIFACTS = {
    f"{RUN}/prepared/meta.json": PREPARED_READERS,
    f"{RUN}/prepared/vocab.json": PREPARED_READERS,
    f"{RUN}/prepared/train.bin": PREPARED_READERS,
    f"{RUN}/prepared/val.bin": PREPARED_READERS,
    f"{RUN}/prepared/copy_index.npz": (COPYING,),
    f"{RUN}/best.pt": (SAMPLE_BEST, EVALUATE, INFO_BEST, COPYING),
    f"{RUN}/last.pt": (RESUME, SAMPLE_LAST, INFO_LAST),
    f"{RUN}/metrics.csv": (RESUME, PLOT),
    f"{RUN}/config.yaml": (PLOT, SAMPLE_CONFIG),
    "runs/LATEST": (SAMPLE_LATEST, EVALUATE_LATEST),
    "vectors.txt": (VECTORS,),
}
DAMAGES = ("truncate", "flip", "empty", "swap", "delete")


def make_project(root: Path, sentences: list[str], shift: float) -> Path:
    """A corpus, a config, a vectors file, then a real run: prepare, train, and a copy-index cache."""
    root.mkdir(parents=True)
    (root / "corpus.txt").write_text(learnable_text(40).replace(SENTENCES[0], sentences[0]), encoding="utf-8")
    config = {
        "data": {"path": "corpus.txt", "level": "char", "val_fraction": 0.1},
        "model": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.0},
        "train": {"out_dir": RUN, "batch_size": 4, "seq_len": 16, "max_epochs": None, "max_steps": 6,
                  "warmup_steps": 2, "eval_every": 3, "save_every": 3, "log_every": 3, "sample_length": 10,
                  "device": "cpu", "threads": 1},
        "sample": {"length": 20},
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    lines = [" ".join([c] + [f"{(i + k) * shift % 1:.4f}" for k in range(8)]) for i, c in enumerate("abcdefghijk")]
    (root / "vectors.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chdir(root)
    for args in (("prepare", "--config", "config.yaml"), ("train", "--config", "config.yaml"), COPYING.args):
        result = run_cli(*args)
        assert result.exit_code == 0, result.stderr
    return root


def outputs(reader: Reader) -> tuple:
    """What a command gave: exit code, stdout, and for a resume the weights it saved."""
    result = run_cli(*reader.args)
    weights = None
    if reader is RESUME and result.exit_code == 0:
        weights = checkpoint.load(f"{RUN}/last.pt")[checkpoint.MODEL_STATE]
    return result, weights


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> dict:
    """Project A (damaged in the cases), project B (the source of swapped files), and A's undamaged outputs."""
    base = tmp_path_factory.mktemp("damage")
    here = Path.cwd()
    try:
        a = make_project(base / "a", SENTENCES, 0.37)
        b = make_project(base / "b", ["the owl sat on the roof."], 0.61)
        expected = {}
        for name, project in (("a", a), ("b", b)):
            readers = {r for group in ARTIFACTS.values() for r in group if r.exact}
            for reader in readers:
                copy = base / f"expected-{name}-{reader.name}"
                fresh_copy(project, copy)
                os.chdir(copy)
                result, weights = outputs(reader)
                assert result.exit_code == 0, (reader, result.stderr)
                expected[name, reader] = (result.stdout, weights)
    finally:
        os.chdir(here)
    return {"a": a, "b": b, "expected": expected}


def fresh_copy(project: Path, to: Path) -> None:
    shutil.copytree(project, to)
    (to / "runs" / "LATEST").write_text(f"{(to / RUN).resolve()}\n", encoding="utf-8")  # as `train` there writes it


def damage(path: Path, how: str, other: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))])
    elif how == "flip":
        blob = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] ^= rng.randint(1, 255)
        path.write_bytes(bytes(blob))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "swap":
        shutil.copyfile(other, path)
    else:
        path.unlink()


def check(reader: Reader, artifact: str, how: str, result, weights, expected: dict) -> None:
    where = f"{reader.name} after {how} {artifact}:\n{result.stderr}"
    assert result.exit_code in (0, 2), where
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, where
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, where
        assert Path(artifact).name in errors[0] or str(Path(artifact).parent) in errors[0], where
        return
    if not reader.exact or how == "delete":  # e.g. --run falls back from a deleted best.pt to last.pt
        return
    accepted = [expected["a", reader]]
    if how == "swap" and artifact in ("runs/LATEST", f"{RUN}/best.pt", f"{RUN}/last.pt"):
        accepted.append(expected["b", reader])  # another run's whole file is a valid file of that run
    matching = [reference for stdout, reference in accepted if result.stdout == stdout]
    assert matching, where
    if weights is not None:
        assert any(all(torch.equal(weights[k], ref[k]) for k in ref) for ref in matching), where


def snapshot(root: Path) -> dict:
    return {name: (root / name).read_bytes() if (root / name).exists() else None for name in SOURCES}


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("artifact", list(ARTIFACTS))
def test_damaged_file_is_repaired_or_named(projects, tmp_path, monkeypatch, artifact, how):
    for round_ in range(ROUNDS):
        seed = random.Random(f"{artifact} {how} {round_}").random()  # the same damage for every reader
        for reader in ARTIFACTS[artifact]:
            case = tmp_path / f"{round_}-{reader.name}"
            fresh_copy(projects["a"], case)
            monkeypatch.chdir(case)
            damage(case / artifact, how, projects["b"] / artifact, random.Random(seed))
            before = snapshot(case)
            result, weights = outputs(reader)
            check(reader, artifact, how, result, weights, projects["expected"])
            assert snapshot(case) == before, f"{reader.name} changed a source file"


# --------------------------------------------------------------------------- the answers, one by one


def project_copy(projects, tmp_path, monkeypatch) -> Path:
    case = tmp_path / "case"
    fresh_copy(projects["a"], case)
    monkeypatch.chdir(case)
    return case


def test_zeroed_bytes_inside_the_weights_are_refused(projects, tmp_path, monkeypatch):
    """64 zeroed bytes in the middle of best.pt still unpickle; the checksum written at save time refuses them."""
    case = project_copy(projects, tmp_path, monkeypatch)
    best = case / RUN / "best.pt"
    blob = bytearray(best.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 64] = bytes(64)
    best.write_bytes(bytes(blob))
    result = run_cli(*SAMPLE_BEST.args)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"Error: {RUN}/best.pt is damaged: its contents no longer match the checksum" in result.stderr
    assert f"use another checkpoint of the run: {RUN}/last.pt or {RUN}/last.prev.pt" in result.stderr


def test_checkpoint_from_before_checksums_still_loads(projects, tmp_path, monkeypatch):
    case = project_copy(projects, tmp_path, monkeypatch)
    payload = checkpoint.load(case / RUN / "best.pt")
    del payload[checkpoint.CHECKSUM]
    torch.save(payload, case / RUN / "best.pt")
    result = run_cli(*SAMPLE_BEST.args)
    assert result.exit_code == 0 and result.stdout == projects["expected"]["a", SAMPLE_BEST][0]


def test_resume_with_a_damaged_last_pt_names_the_save_to_use(projects, tmp_path, monkeypatch):
    """last.prev.pt is the save before last.pt; the error gives the command that resumes from it."""
    case = project_copy(projects, tmp_path, monkeypatch)
    run = case / RUN
    assert checkpoint.load(run / "last.prev.pt")[checkpoint.TRAINER_STATE]["step"] == 6  # the final save repeats step 6
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    result = run_cli(*RESUME.args)
    assert result.exit_code == 2, result.stderr
    assert f"Error: {RUN}/last.pt is truncated or corrupt" in result.stderr
    assert f"the save before it, {RUN}/last.prev.pt (step 6), is intact: resume from it with " in result.stderr
    assert f"`cp {RUN}/last.prev.pt {RUN}/last.pt`, then run this command again" in result.stderr
    shutil.copyfile(run / "last.prev.pt", run / "last.pt")
    again = run_cli(*RESUME.args)
    assert again.exit_code == 0, again.stderr
    weights = checkpoint.load(run / "last.pt")[checkpoint.MODEL_STATE]
    reference = projects["expected"]["a", RESUME][1]
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    (run / "last.pt").write_bytes(b"")
    (run / "last.prev.pt").unlink()
    result = run_cli(*RESUME.args)
    assert result.exit_code == 2
    assert f"no intact save to resume from; {RUN}/best.pt is intact but holds no optimizer state" in result.stderr


def test_damaged_prepared_data_is_prepared_again_or_named(projects, tmp_path, monkeypatch):
    case = project_copy(projects, tmp_path, monkeypatch)
    prepared = case / RUN / "prepared"
    (prepared / "val.bin").write_bytes((prepared / "val.bin").read_bytes()[:-2] + b"\x00\x00")
    result = run_cli(*EVALUATE.args)
    assert result.exit_code == 0 and result.stdout == projects["expected"]["a", EVALUATE][0]
    assert f"{RUN}/prepared/val.bin is damaged: its checksum differs" in result.stderr
    assert "preparing it again from the sources" in result.stderr
    (case / "corpus.txt").unlink()
    (prepared / "train.bin").write_bytes(b"")
    result = run_cli(*EVALUATE.args)
    assert result.exit_code == 2
    assert f"Error: {RUN}/prepared/train.bin is 0 bytes, meta.json records" in result.stderr
    assert "its sources (corpus.txt) are not there to prepare it again" in result.stderr


def test_damaged_latest_pointer_says_what_to_pass(projects, tmp_path, monkeypatch):
    case = project_copy(projects, tmp_path, monkeypatch)
    (case / "runs" / "LATEST").write_bytes(b"\xff\xfe garbage")
    result = run_cli(*SAMPLE_LATEST.args)
    assert result.exit_code == 2
    assert "Error: runs/LATEST is damaged: it should hold the path of the latest run directory; pass --run DIR" in (
        result.stderr
    )
    assert "(runs there: runs/tiny)" in result.stderr


def test_damaged_metrics_rows_are_dropped_and_the_file_kept(projects, tmp_path, monkeypatch):
    case = project_copy(projects, tmp_path, monkeypatch)
    metrics = case / RUN / "metrics.csv"
    damaged = metrics.read_text().replace("\n3,", "\n3x,", 1)
    metrics.write_text(damaged)
    result = run_cli(*RESUME.args)
    assert result.exit_code == 0, result.stderr
    assert f"{RUN}/metrics.csv is damaged: dropped 1 broken row(s), kept" in result.stderr
    assert (case / RUN / "metrics.damaged.csv").read_text() == damaged
    steps = [line.split(",")[0] for line in metrics.read_text().splitlines()[1:]]
    assert steps == ["6", "8"]

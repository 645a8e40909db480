"""`rnngen plot`: training curves of real runs drawn to a picture file, and a clear error without matplotlib."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnngen.analysis.plot import read_run, run_names
from tests.conftest import learnable_text, run_cli, tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A tiny rnn and a tiny lstm, really trained, each with a metrics.csv."""
    root = tmp_path_factory.mktemp("plot")
    corpus = root / "corpus.txt"
    corpus.write_text(learnable_text(), encoding="utf-8")
    runs = []
    for cell in ("rnn", "lstm"):
        work = root / f"work-{cell}"
        work.mkdir()
        out_dir = root / "runs" / cell
        config = tiny_config(work, corpus, model={"cell": cell}, train={"out_dir": str(out_dir), "sample_length": 0})
        assert run_cli("train", "--config", config).exit_code == 0
        runs.append(out_dir)
    return runs


def test_metrics_are_read_with_validation_only_at_evaluations(two_runs):
    curves = read_run(two_runs[0], "rnn")
    assert curves.step == [5, 10, 15, 20]  # log_every 5, eval_every 10 in the tiny config
    assert [v is not None for v in curves.val_loss] == [False, True, False, True]
    assert all(n > 0 for n in curves.grad_norm) and curves.grad_clip == 1.0
    assert curves.minutes == sorted(curves.minutes)


@pytest.mark.parametrize("x_axis", ["step", "time"])
def test_plot_writes_a_png_of_several_runs(two_runs, tmp_path, x_axis):
    picture = tmp_path / "training.png"
    result = run_cli("plot", *two_runs, "-o", picture, "--x", x_axis)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{picture}\n"
    data = picture.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) < 150_000


def test_plot_default_output_and_svg(two_runs, tmp_path):
    assert run_cli("plot", two_runs[0]).stdout == "training.png\n"  # the test runs in tmp_path
    assert (tmp_path / "training.png").read_bytes()[:8] == PNG_SIGNATURE
    assert run_cli("plot", two_runs[0], "-o", tmp_path / "t.svg").exit_code == 0
    assert b"<svg" in (tmp_path / "t.svg").read_bytes()[:500]


def test_run_names_fall_back_to_paths_when_they_clash(tmp_path):
    for parent in ("a", "b"):
        (tmp_path / parent / "run").mkdir(parents=True)
    (tmp_path / "lstm").mkdir()
    names = run_names([str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), str(tmp_path / "lstm")])
    assert names == [str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "lstm"]


def test_plot_user_errors(two_runs, tmp_path):
    result = run_cli("plot", tmp_path / "nowhere")
    assert (
        result.exit_code == 2
        and result.stderr.startswith("Error: run directory ")
        and "does not exist" in result.stderr
    )
    (tmp_path / "empty").mkdir()
    result = run_cli("plot", tmp_path / "empty")
    assert result.exit_code == 2 and "holds no metrics.csv yet" in result.stderr
    result = run_cli("plot", two_runs[0], "-o", tmp_path / "curves.jpg")
    assert result.exit_code == 2 and "ending in .png, .svg or .pdf" in result.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    result = run_cli("plot", bad)
    assert result.exit_code == 2 and "is not an rnngen metrics file" in result.stderr
    assert run_cli("plot").exit_code == 2  # RUN_DIR is required


def test_plot_without_matplotlib_says_how_to_install(two_runs, tmp_path):
    hide_matplotlib = "import sys; sys.modules['matplotlib'] = None; from rnngen.cli import main; main(sys.argv[1:])"
    args = ["plot", str(two_runs[0]), "-o", str(tmp_path / "t.png")]
    result = subprocess.run([sys.executable, "-c", hide_matplotlib, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert (
        result.stderr
        == "Error: plotting needs matplotlib, which is not installed; install it with: pip install 'rnngen[plot]'\n"
    )
    assert result.stdout == "" and not (tmp_path / "t.png").exists()

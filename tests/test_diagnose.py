"""`rnngen diagnose`: gradient norms through time, checked against theory and an independent computation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnngen.analysis.diagnose import (
    decay_slope,
    hidden_gradient_norms,
    recurrent_sigma_max,
    step_through,
    text_windows,
    verdict,
)
from rnngen.models.registry import build_model
from tests.conftest import learnable_text, run_cli, tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT = learnable_text()
CHARS = sorted(set(TEXT))
IDS = np.array([CHARS.index(c) for c in TEXT], dtype=np.int64)


def tiny_module(cell: str, hidden_size: int = 32, num_layers: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    args = dict(vocab_size=len(CHARS), cell=cell, embedding_dim=16, hidden_size=hidden_size,
                num_layers=num_layers, dropout=0.0, tie_weights=False)  # fmt: skip
    return build_model(args).eval()


def norms_on_text(module, steps: int = 30) -> torch.Tensor:
    """(L, T) gradient norms over windows of the tiny corpus, from a warmed-up state."""
    windows, warmup = text_windows(IDS, steps)
    token_ids = torch.from_numpy(windows)
    with torch.no_grad():
        state = module.rnn(module.embedding(token_ids[:, :warmup]))[1]
    return hidden_gradient_norms(module, token_ids[:, warmup:], state)


# --------------------------------------------------------------------------- the measurement is right


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_by_step_cells_reproduce_the_fused_module(cell):
    module = tiny_module(cell, hidden_size=8, num_layers=2)
    inputs = torch.from_numpy(IDS[:24].reshape(2, 12))
    with torch.no_grad():
        state = module.rnn(module.embedding(inputs[:, :5]))[1]
        fused, _ = module.rnn(module.embedding(inputs[:, 5:]), state)  # (B, T, H) of the top layer
        stepped = step_through(module, inputs[:, 5:], state)[-1]  # T x (B, H)
    assert torch.allclose(torch.stack(stepped, 1), fused, atol=1e-5)


def continuation_loss(module, inputs, last_target, t, hidden_at_t, state_at_t):
    """Loss at the last step, run by the fused module from h_t = hidden_at_t (an independent path)."""
    state = (hidden_at_t, state_at_t[1]) if isinstance(state_at_t, tuple) else hidden_at_t
    outputs, _ = module.rnn(module.embedding(inputs[:, t + 1 :]), state)
    logits = module.head(outputs[:, -1])
    return torch.nn.functional.cross_entropy(logits, last_target, reduction="sum")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_norms_agree_with_per_step_autograd_and_finite_differences(cell):
    module = tiny_module(cell, hidden_size=4).double()
    token_ids = torch.from_numpy(IDS[:14].reshape(2, 7))  # B=2, T=6 steps read, the 7th token scored
    inputs, last_target = token_ids[:, :-1], token_ids[:, -1]
    steps = inputs.shape[1]
    measured = hidden_gradient_norms(module, token_ids)[0]  # (T,) by distance
    for t in range(steps - 1):  # the last step's h is read by the output layer directly, not through time
        with torch.no_grad():
            state_at_t = module.rnn(module.embedding(inputs[:, : t + 1]))[1]
        hidden = (state_at_t[0] if isinstance(state_at_t, tuple) else state_at_t).clone().requires_grad_(True)
        loss = continuation_loss(module, inputs, last_target, t, hidden, state_at_t)
        (autograd,) = torch.autograd.grad(loss, hidden)  # (1, B, H)
        finite = torch.zeros_like(hidden)
        eps = 1e-6
        with torch.no_grad():
            for index in np.ndindex(*hidden.shape):
                bumped = [hidden.detach().clone() for _ in range(2)]
                bumped[0][index] += eps
                bumped[1][index] -= eps
                up, down = (continuation_loss(module, inputs, last_target, t, h, state_at_t) for h in bumped)
                finite[index] = (up - down) / (2 * eps)
        assert torch.allclose(autograd, finite, rtol=1e-5, atol=1e-9)
        expected = finite[0].norm(dim=-1).mean()  # per row, averaged over the batch
        assert measured[steps - 1 - t].item() == pytest.approx(expected.item(), rel=1e-5)


def test_top_layer_of_a_stack_agrees_with_per_step_autograd():
    module = tiny_module("gru", hidden_size=6, num_layers=2).double()
    token_ids = torch.from_numpy(IDS[:18].reshape(2, 9))
    inputs, last_target = token_ids[:, :-1], token_ids[:, -1]
    measured = hidden_gradient_norms(module, token_ids)  # (2, T)
    t = 3
    with torch.no_grad():
        state_at_t = module.rnn(module.embedding(inputs[:, : t + 1]))[1]  # (2, B, H)
    leaf = state_at_t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(continuation_loss(module, inputs, last_target, t, leaf, state_at_t), leaf)
    assert measured[1, inputs.shape[1] - 1 - t].item() == pytest.approx(grad[1].norm(dim=-1).mean().item(), rel=1e-6)


# --------------------------------------------------------------------------- the measurement shows the theory


def with_recurrent_radius(radius: float):
    """A tanh RNN whose W_hh is an orthogonal matrix times `radius`: every singular value equals radius."""
    module = tiny_module("rnn")
    with torch.no_grad():
        orthogonal, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
        module.rnn.weight_hh_l0.copy_(radius * orthogonal)
    return module


def test_small_recurrent_weights_vanish_and_large_ones_explode():
    shrinking, growing = with_recurrent_radius(0.5), with_recurrent_radius(1.5)
    assert recurrent_sigma_max(shrinking.rnn) == [pytest.approx(0.5, rel=1e-4)]
    assert recurrent_sigma_max(growing.rnn) == [pytest.approx(1.5, rel=1e-4)]
    vanishing, exploding = norms_on_text(shrinking)[0], norms_on_text(growing)[0]
    assert (vanishing[2:] < vanishing[1:-1]).all()  # falls at every step back
    assert vanishing[-1] < 1e-6 * vanishing[1]  # bounded by 0.5 per step: 0.5**28 ~ 4e-9
    assert decay_slope(vanishing[None]) < -0.2
    assert exploding[-1] > 2 * exploding[1]  # grows with distance (tanh saturation slows it below 1.5x)
    assert decay_slope(exploding[None]) > 0


def test_lstm_at_initialisation_decays_more_slowly_than_a_tanh_rnn():
    rnn_slope = decay_slope(norms_on_text(tiny_module("rnn")))
    lstm_slope = decay_slope(norms_on_text(tiny_module("lstm")))
    assert rnn_slope < lstm_slope < 0
    assert lstm_slope - rnn_slope > 0.02  # about 10x per 5 steps against 10x per 4


def test_verdicts():
    assert verdict(-1 / 9, 64).startswith("gradient falls by 10x every 9 steps: long-range context is hard to learn")
    assert "usable" in verdict(-1 / 40, 64)
    assert verdict(0.1, 64).startswith("gradient grows by 10x every 10 steps: exploding")
    assert verdict(0.001, 64).startswith("gradient stays within 10x over 64 steps")


def test_a_real_spike_is_reported_with_its_step(tmp_path):
    """lr 30 with clipping off: the first steps blow the gradient up, and the summary names the step."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    wild = {"lr": 30.0, "grad_clip": None, "warmup_steps": 0, "max_steps": 10, "eval_every": 10, "sample_length": 0}
    result = run_cli("train", "--config", tiny_config(tmp_path, corpus, model={"cell": "rnn"}, train=wild))
    assert "Warning: the gradient norm spiked at step " in result.stderr, result.stderr
    assert "set train.grad_clip to bound them" in result.stderr


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A tiny rnn and a tiny gru, really trained; the rnn's training output is kept for the summary check."""
    root = tmp_path_factory.mktemp("diagnose")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    runs, outputs = {}, {}
    for cell in ("rnn", "gru"):
        work = root / cell
        work.mkdir()
        runs[cell] = root / "runs" / cell  # the directory name is the model's label
        config = tiny_config(work, corpus, model={"cell": cell}, train={"sample_length": 0, "out_dir": str(runs[cell])})
        outputs[cell] = run_cli("train", "--config", config)
        assert outputs[cell].exit_code == 0, outputs[cell].stderr
    return runs, outputs


def test_training_ends_with_a_gradient_summary(trained_runs):
    _, outputs = trained_runs
    assert "gradient norm over 20 steps: mean" in outputs["rnn"].stderr
    assert "of steps" in outputs["rnn"].stderr


def test_diagnose_prints_table_sigma_and_verdict(trained_runs):
    runs, _ = trained_runs
    result = run_cli("diagnose", runs["rnn"], "--steps", "12")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("rnn: rnn, 1 x 32, trained weights; loss at the last of 12 steps")
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4, 6, 8, 11]
    assert all(float(r[1]) > 0 and set(r[2]) == {"#"} for r in rows)
    assert "largest singular value of W_hh: layer 1: " in out
    assert "\nverdict: gradient " in out


def test_diagnose_json_init_and_comparison(trained_runs, tmp_path):
    runs, _ = trained_runs
    data = tmp_path / "other.txt"
    data.write_text("the cat sat on the dog. " * 20, encoding="utf-8")
    result = run_cli(
        "diagnose", runs["rnn"], runs["gru"] / "best.pt", "--steps", "10", "--init", "--json", "--data", data
    )
    assert result.exit_code == 0, result.stderr
    profiles = json.loads(result.stdout)
    assert [(p["label"], p["weights"]) for p in profiles] == [
        ("rnn", "trained"), ("rnn (init)", "initial"), ("gru", "trained"), ("gru (init)", "initial")
    ]  # fmt: skip
    for p in profiles:
        assert p["distance"] == list(range(10)) and len(p["norms"]) == 1 and len(p["norms"][0]) == 10
        assert all(n > 0 for n in p["norms"][0]) and p["verdict"].startswith("gradient ")
    assert profiles[0]["sigma_max"] and profiles[2]["sigma_max"] is None
    assert profiles[0]["norms"] != profiles[1]["norms"]  # trained and fresh weights differ
    table = run_cli("diagnose", runs["rnn"], runs["gru"], "--steps", "10").stdout
    assert "last row: steps per 10x change" in table and table.rstrip().splitlines()[-1].startswith(" 10x per")


def test_diagnose_plot_writes_a_png(trained_runs, tmp_path):
    runs, _ = trained_runs
    picture = tmp_path / "gradients.png"
    result = run_cli("diagnose", runs["rnn"], runs["gru"], "--steps", "10", "--init", "--plot", picture)
    assert result.exit_code == 0, result.stderr
    assert picture.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {picture}" in result.stderr and result.stdout.startswith("rnn:")


def test_diagnose_user_errors(trained_runs, tmp_path):
    runs, _ = trained_runs
    short = tmp_path / "short.txt"
    short.write_text("the cat", encoding="utf-8")
    result = run_cli("diagnose", runs["rnn"], "--data", short, "--steps", "20")
    assert result.exit_code == 2 and "Error: the text has 7 tokens, fewer than --steps 20 + 1" in result.stderr
    result = run_cli("diagnose", tmp_path / "nowhere")
    assert result.exit_code == 2 and "Error: run directory" in result.stderr
    assert run_cli("diagnose", runs["rnn"], "--steps", "2").exit_code == 2
    assert run_cli("diagnose").exit_code == 2  # CHECKPOINT_OR_RUN is required
    result = run_cli("diagnose", runs["rnn"], "--plot", tmp_path / "g.jpg")
    assert result.exit_code == 2 and "ending in .png, .svg or .pdf" in result.stderr and result.stdout == ""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    config = tiny_config(tmp_path, corpus, model={"cell": "ngram"}, train={"out_dir": str(tmp_path / "ngram")})
    assert run_cli("train", "--config", config).exit_code == 0
    result = run_cli("diagnose", tmp_path / "ngram")
    assert result.exit_code == 2 and "cell ngram has no hidden state" in result.stderr


def test_diagnose_plot_without_matplotlib_says_how_to_install(trained_runs, tmp_path):
    runs, _ = trained_runs
    hide_matplotlib = "import sys; sys.modules['matplotlib'] = None; from rnngen.cli import main; main(sys.argv[1:])"
    args = ["diagnose", str(runs["rnn"]), "--plot", str(tmp_path / "g.png")]
    result = subprocess.run([sys.executable, "-c", hide_matplotlib, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and "pip install 'rnngen[plot]'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "g.png").exists()


def test_init_weights_are_the_ones_training_started_from(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    barely = {"out_dir": str(tmp_path / "lstm"), "max_steps": 1, "lr": 1e-9, "warmup_steps": 0, "sample_length": 0}
    assert run_cli("train", "--config", tiny_config(tmp_path, corpus, train=barely)).exit_code == 0
    trained, initial = json.loads(run_cli("diagnose", tmp_path / "lstm", "--steps", "8", "--init", "--json").stdout)
    assert initial["weights"] == "initial"
    assert initial["norms"][0] == pytest.approx(trained["norms"][0], rel=1e-4)  # one step of lr 1e-9 moved nothing

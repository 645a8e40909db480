"""Vanishing and exploding gradients through time, measured on a real model.

Back-propagation through time multiplies the gradient by one Jacobian dh_t/dh_{t-1} per step
back. For the tanh RNN that Jacobian is diag(1 - h_t^2) W_hh, so its size is bounded by the
largest singular value of W_hh: below 1 the gradient from a distant step shrinks geometrically
(it vanishes), above 1 it can grow (it explodes). LSTM and GRU carry their state along a gated,
additive path on which the gradient can survive many more steps.

`gradient_profile` measures ||d loss_T / d h_t|| for every earlier step t and layer: the
training signal that the prediction at the last step sends back to the state t steps earlier.
It steps through time with one cell per layer that shares the fused module's weights, so every
h_t is a tensor of its own; training never does this (it runs the fused module).
`training_gradient_summary` is the other side: what the gradient norms logged during training say.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnngen.errors import DataError, UserError
from rnngen.models.registry import build_model
from rnngen.models.state import hidden_of, map_state
from rnngen.runs import RunPaths

WINDOWS = 128  # batch of text windows the norms are averaged over
WARMUP_TOKENS = 50  # read before each window without gradients, so the state is a realistic one
SLOW_DECAY_STEPS = 20  # falling 10x in fewer steps than this: distant context barely trains
NORM_FLOOR = 1e-30  # norms below this (or exactly 0) count as this on the log scale
RECURRENT_CELLS = ("rnn", "lstm", "gru")


@dataclass
class GradientProfile:
    """Gradient norm against distance back in time for one model."""

    label: str
    checkpoint: str
    weights: str  # "trained", or "initial" for the same architecture at fresh weights
    cell: str
    num_layers: int
    hidden_size: int
    windows: int
    norms: list[list[float]]  # [layer][distance]; distance 0 is the step whose loss is differentiated
    log10_per_step: float  # fitted change of log10(norm) per step back; negative = vanishing
    sigma_max: list[float] | None  # plain rnn only: largest singular value of each layer's W_hh

    @property
    def steps(self) -> int:
        return len(self.norms[0])

    @property
    def verdict(self) -> str:
        return verdict(self.log10_per_step, self.steps)

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps, "distance": list(range(self.steps)), "verdict": self.verdict}


# --------------------------------------------------------------------------- measuring


def layer_cells(rnn: nn.RNNBase) -> list[nn.Module]:
    """One RNNCell/LSTMCell/GRUCell per layer, sharing the fused module's weights (same gate order)."""
    cells = []
    for layer in range(rnn.num_layers):
        input_size = rnn.input_size if layer == 0 else rnn.hidden_size
        if isinstance(rnn, nn.LSTM):
            cell = nn.LSTMCell(input_size, rnn.hidden_size)
        elif isinstance(rnn, nn.GRU):
            cell = nn.GRUCell(input_size, rnn.hidden_size)
        else:
            cell = nn.RNNCell(input_size, rnn.hidden_size, nonlinearity=rnn.nonlinearity)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(cell, name, getattr(rnn, f"{name}_l{layer}"))
        cells.append(cell.to(rnn.weight_hh_l0.device))
    return cells


def step_through(module: nn.Module, inputs: torch.Tensor, state=None) -> list[list[torch.Tensor]]:
    """Run inputs (B, T) one step at a time; returns every hidden state h_t, [layer][t] -> (B, H)."""
    layer_input = list(module.embedding(inputs).unbind(1))  # T x (B, E); no dropout: this is evaluation
    hiddens = []
    for layer, cell in enumerate(layer_cells(module.rnn)):
        carry = _layer_state(state, layer)  # (B, H), an (h, c) pair, or None for zeros
        outputs = []
        for x_t in layer_input:
            carry = cell(x_t, carry)
            outputs.append(hidden_of(carry))  # (B, H)
        hiddens.append(outputs)
        layer_input = outputs
    return hiddens


def _layer_state(state, layer: int):
    """One layer's part of a state: (L, B, H) -> (B, H), an lstm's (h, c) pair -> a pair; None stays None."""
    return map_state(lambda s: s[layer], state)


def hidden_gradient_norms(module: nn.Module, token_ids: torch.Tensor, state=None) -> torch.Tensor:
    """||d loss_T / d h_t^l||, averaged over the batch, as (L, T) indexed by distance back from the last step.

    token_ids (B, T+1): the model reads the first T tokens from `state` and is scored on the last.
    """
    inputs, last_target = token_ids[:, :-1], token_ids[:, -1]  # (B, T), (B,)
    with torch.enable_grad():
        hiddens = step_through(module, inputs, state)
        logits = module.head(hiddens[-1][-1])  # (B, V)
        # summed, not averaged: each row's gradient is then exactly the gradient of its own loss
        loss = F.cross_entropy(logits, last_target, reduction="sum")
        grads = torch.autograd.grad(loss, [h for layer in hiddens for h in layer])
    norms = torch.stack([g.norm(dim=-1).mean() for g in grads])  # (L * T,)
    return norms.view(len(hiddens), -1).flip(-1).detach()  # (L, T); column d = d steps back


def text_windows(ids: np.ndarray, steps: int, count: int = WINDOWS) -> tuple[np.ndarray, int]:
    """Up to `count` evenly spread windows (B, warmup + steps + 1) of the token ids, and the warmup length."""
    n = len(ids)
    if n < steps + 1:
        raise DataError(
            f"the text has {n:,} tokens, fewer than --steps {steps} + 1; give a longer --data file or lower --steps"
        )
    warmup = min(WARMUP_TOKENS, n - steps - 1)
    span = warmup + steps + 1
    starts = np.unique(np.linspace(0, n - span, count).round().astype(np.int64))
    return np.stack([np.asarray(ids[s : s + span], dtype=np.int64) for s in starts]), warmup


def gradient_profile(model, ids: np.ndarray, steps: int, fresh: bool = False, seed: int = 0) -> GradientProfile:
    """Measure a loaded rnngen.api.Model on token ids.

    fresh=True measures the same architecture at weights drawn after torch.manual_seed(seed); with the
    run's train.seed (what the CLI passes) these are the weights its training started from.
    """
    cell = model.model_args["cell"]
    if cell not in RECURRENT_CELLS:
        what = (
            "is an HMM (`rnngen states` shows its hidden states)"
            if cell == "hmm"
            else f"cell {cell} has no hidden state"
        )
        raise UserError(
            f"{model.path}: {what}; diagnose measures gradients through time in {', '.join(RECURRENT_CELLS)} checkpoints"
        )
    module = model.module
    if fresh:
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            torch.manual_seed(seed)
            module = build_model(model.model_args).to(model.device)
    module.eval()
    windows, warmup = text_windows(ids, steps)
    token_ids = torch.from_numpy(windows).to(model.device)  # (B, warmup + T + 1)
    with torch.no_grad():
        state = module.rnn(module.embedding(token_ids[:, :warmup]))[1] if warmup else None
    norms = hidden_gradient_norms(module, token_ids[:, warmup:], state)  # (L, T)
    args = model.model_args
    return GradientProfile(
        label=model_label(model.path) + (" (init)" if fresh else ""),
        checkpoint=str(model.path),
        weights="initial" if fresh else "trained",
        cell=args["cell"],
        num_layers=args["num_layers"],
        hidden_size=args["hidden_size"],
        windows=len(windows),
        norms=norms.tolist(),
        log10_per_step=decay_slope(norms),
        sigma_max=recurrent_sigma_max(module.rnn) if args["cell"] == "rnn" else None,
    )


def model_label(path) -> str:
    """A run's directory name for best.pt/last.pt (runs/lstm/best.pt -> lstm), else the file name."""
    path = Path(path)
    return path.parent.name if path.name in RunPaths.CHECKPOINTS and path.parent.name else path.name


def recurrent_sigma_max(rnn: nn.RNNBase) -> list[float]:
    """Largest singular value of each layer's W_hh: the most one step back can stretch the gradient."""
    return [
        torch.linalg.matrix_norm(getattr(rnn, f"weight_hh_l{k}").detach().float(), ord=2).item()
        for k in range(rnn.num_layers)
    ]


def decay_slope(norms: torch.Tensor) -> float:
    """Least-squares slope of log10(norm) against distance, over distances 1.. (layers averaged in log space).

    Distance 0 is left out: there the gradient comes straight from the output layer, not through time.
    """
    log_norms = norms.double().clamp_min(NORM_FLOOR).log10().mean(0)[1:].numpy()  # (T - 1,)
    distance = np.arange(1, len(log_norms) + 1)
    return float(np.polyfit(distance, log_norms, 1)[0])


def verdict(slope: float, steps: int) -> str:
    """One line that says what the fitted decay means for learning long-range context."""
    decades = slope * (steps - 1)
    if abs(decades) < 1:
        return (f"gradient stays within 10x over {steps} steps (x{10 ** decades:.2g} at the far end): "
                "distant context still gets a strong training signal")  # fmt: skip
    per_decade = 1 / abs(slope)
    if slope > 0:
        return (f"gradient grows by 10x every {per_decade:.0f} steps: exploding gradients; "
                "training needs train.grad_clip (and perhaps a lower train.lr)")  # fmt: skip
    if per_decade < SLOW_DECAY_STEPS:
        return f"gradient falls by 10x every {per_decade:.0f} steps: long-range context is hard to learn for this model"
    return (
        f"gradient falls by 10x every {per_decade:.0f} steps: distant context gets a weaker but usable training signal"
    )


# --------------------------------------------------------------------------- reporting


def shown_distances(steps: int) -> list[int]:
    """0, 1, 2, 3, 4, 6, 8, 12, 16, 24, ... and the last distance: compact, dense near the end."""
    shown, d = {0, 1, 2, 3}, 4
    while d < steps:
        shown.update((d, d * 3 // 2))
        d *= 2
    return sorted(x for x in shown | {steps - 1} if x < steps)


def log_bar(value: float, low: float, chars_per_decade: float) -> str:
    return "#" * max(1, round((math.log10(max(value, NORM_FLOOR)) - low) * chars_per_decade) + 1)


def format_profile(profile: GradientProfile, bar_width: int = 40) -> str:
    """Distance against gradient norm per layer, a log-scale bar of the layer mean, and the verdict."""
    norms = np.maximum(np.array(profile.norms), NORM_FLOOR)  # (L, T)
    mean = 10 ** np.log10(norms).mean(0)  # (T,) geometric mean over layers
    distances = shown_distances(profile.steps)
    logs = np.log10(mean[distances])
    low, high = logs.min(), logs.max()
    chars_per_decade = bar_width / max(high - low, 1.0)
    layers = " ".join(f"{f'layer {k + 1}':>9}" for k in range(profile.num_layers))
    lines = [
        f"{profile.label}: {profile.cell}, {profile.num_layers} x {profile.hidden_size}, {profile.weights} weights; "
        f"loss at the last of {profile.steps} steps, averaged over {profile.windows} windows",
        f"{'distance':>8} {layers}  log scale, {'#' * max(1, round(chars_per_decade))} = 10x",
    ]
    for d in distances:
        values = " ".join(f"{norms[k, d]:>9.2e}" for k in range(profile.num_layers))
        lines.append(f"{d:>8} {values}  {log_bar(mean[d], low, chars_per_decade)}")
    if profile.sigma_max is not None:
        sigmas = ", ".join(f"layer {k + 1}: {s:.3f}" for k, s in enumerate(profile.sigma_max))
        if max(profile.sigma_max) < 1:
            why = "below 1, and |tanh'| <= 1, so the gradient must vanish"
        else:
            why = "1 or more, so this bound does not force vanishing; the table is what actually happens"
        lines.append(f"largest singular value of W_hh: {sigmas} ({why})")
    lines.append(f"verdict: {profile.verdict}")
    return "\n".join(lines) + "\n"


def format_comparison(profiles: list[GradientProfile]) -> str:
    """Several models side by side: gradient norm (mean over layers) at each shown distance, and the decay."""
    width = max(10, *(len(p.label) for p in profiles))
    steps = min(p.steps for p in profiles)
    lines = [f"{'distance':>8} " + " ".join(f"{p.label:>{width}}" for p in profiles)]
    for d in shown_distances(steps):
        cells = [10 ** np.log10(np.maximum(np.array(p.norms)[:, d], NORM_FLOOR)).mean() for p in profiles]
        lines.append(f"{d:>8} " + " ".join(f"{c:>{width}.2e}" for c in cells))
    lines.append(f"{'10x per':>8} " + " ".join(f"{_per_decade(p.log10_per_step):>{width}}" for p in profiles))
    return "\n".join(lines) + "\n"


def _per_decade(slope: float) -> str:
    """Steps per 10x change: '9 down', '12 up'."""
    if slope == 0:
        return "flat"
    return f"{1 / abs(slope):.0f} {'down' if slope < 0 else 'up'}"


def format_report(profiles: list[GradientProfile]) -> str:
    text = "\n".join(format_profile(p) for p in profiles)
    if len(profiles) > 1:
        text += "\ngradient norm by distance (mean over layers); last row: steps per 10x change\n" + format_comparison(
            profiles
        )
    return text

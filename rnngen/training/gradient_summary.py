"""The end-of-training summary of a session's gradient norms: how often clipping fired, and spikes.

rnngen diagnose measures gradients through time on a trained model; this is the training side: the
norm of every step's gradient (before clipping), summarised on stderr when training stops.
"""

from __future__ import annotations

import math
import statistics

from rnngen import console

SPIKE_FACTOR = 10.0  # a step whose gradient norm exceeds the running average of the steps before it by this
SPIKE_AVERAGE_DECAY = 0.98  # the running average of gradient norms forgets at this rate per step (~50 steps)
MOSTLY_CLIPPED = 0.5  # share of clipped steps above which training is warned about


def training_gradient_summary(
    norms: list[float], grad_clip: float | None, last_step: int, settle_steps: int = 0
) -> tuple[str, list[str]]:
    """A summary line of a training session's gradient norms (before clipping), and warnings.

    norms holds one value per step of the session, the last one being step `last_step`; the
    non-finite ones (steps that were skipped, and warned about then) are left out. Jumps in the
    first `settle_steps` steps of a run (the learning-rate warmup) are expected and not flagged.
    """
    finite = [n for n in norms if math.isfinite(n)]
    if not finite:
        return "", []
    line = (f"gradient norm over {len(finite):,} steps: mean {statistics.fmean(finite):.3g}, "
            f"median {statistics.median(finite):.3g}, max {max(finite):.3g}")  # fmt: skip
    warnings = []
    if grad_clip is not None:
        clipped = sum(n > grad_clip for n in finite) / len(finite)
        line += f"; clipped to {grad_clip:g} in {clipped:.0%} of steps"
        if clipped > MOSTLY_CLIPPED:
            warnings.append(
                f"gradient clipping fired in {clipped:.0%} of steps: most updates were shrunk, so training moved "
                "slower than train.lr says; lower train.lr, or raise train.grad_clip if training is stable"
            )
    first_step = last_step - len(norms) + 1
    spikes = [(i, ratio) for i, ratio in gradient_spikes(norms) if first_step + i > settle_steps]
    if spikes:
        where = ", ".join(str(first_step + index) for index, _ in spikes[:5]) + (", ..." if len(spikes) > 5 else "")
        guard = "clipping kept those updates bounded" if grad_clip is not None else "set train.grad_clip to bound them"
        warnings.append(
            f"the gradient norm spiked at step{'s' if len(spikes) > 1 else ''} {where}, up to {max(r for _, r in spikes):.0f}x the average of the "
            f"steps before: exploding gradients; {guard}, or lower train.lr"
        )
    return line, warnings


def gradient_spikes(norms: list[float]) -> list[tuple[int, float]]:
    """(index, norm / running average of the norms before it) for every step where that ratio exceeds SPIKE_FACTOR.

    The average forgets slowly, so a gradual drift (such as the fall from the initial value) never
    counts, while a sudden jump does.
    """
    spikes, average = [], None
    for index, norm in enumerate(norms):
        if not math.isfinite(norm):
            continue
        if average and norm > SPIKE_FACTOR * average:  # None before the first step; 0 only if all were 0
            spikes.append((index, norm / average))
        average = norm if average is None else SPIKE_AVERAGE_DECAY * average + (1 - SPIKE_AVERAGE_DECAY) * norm
    return spikes


def report_training_gradients(
    norms: list[float], grad_clip: float | None, last_step: int, settle_steps: int = 0
) -> None:
    """Print the end-of-training gradient summary on stderr."""
    line, warnings = training_gradient_summary(norms, grad_clip, last_step, settle_steps)
    if line:
        console.info(line)
    for warning in warnings:
        console.warn(warning)

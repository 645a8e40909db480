"""The end-of-training gradient summary (moved here from test_diagnose.py with the code it tests)."""

from __future__ import annotations

from rnngen.training.gradient_summary import training_gradient_summary


def test_training_summary_is_quiet_for_calm_norms_and_warns_on_clipping_and_spikes():
    line, warnings = training_gradient_summary([0.5, 0.6, 0.4, 0.5] * 10, grad_clip=1.0, last_step=40)
    assert line.startswith("gradient norm over 40 steps: mean 0.5") and "clipped to 1 in 0% of steps" in line
    assert warnings == []
    _, warnings = training_gradient_summary([2.0, 3.0, 0.9] * 10, grad_clip=1.0, last_step=30)
    assert len(warnings) == 1 and "clipping fired in 67% of steps" in warnings[0]
    resumed_at_100 = [0.5] * 30 + [40.0] + [0.5] * 10  # steps 101..141; the spike is step 131
    _, warnings = training_gradient_summary(resumed_at_100, grad_clip=None, last_step=141)
    assert len(warnings) == 1 and "spiked at step 131, up to 80x the average of the steps before" in warnings[0]
    assert "set train.grad_clip" in warnings[0]
    falling_start = [8.0, 5.0, 3.0, 1.0, 0.5] + [0.2] * 200  # large at initialisation: normal, not a spike
    assert training_gradient_summary(falling_start, grad_clip=None, last_step=205)[1] == []
    with_skipped = [0.5, float("nan"), 0.5, float("inf"), 0.5]  # skipped steps are left out of the summary
    assert training_gradient_summary(with_skipped, 1.0, 5)[0].startswith("gradient norm over 3 steps: mean 0.5,")
    assert training_gradient_summary([], 1.0, 0) == ("", [])


def test_jumps_during_warmup_are_not_flagged():
    early = [0.5] * 8 + [20.0] + [0.5] * 100  # step 9, inside a 20-step warmup
    assert training_gradient_summary(early, grad_clip=1.0, last_step=109, settle_steps=20)[1] == []
    assert training_gradient_summary(early, grad_clip=1.0, last_step=109)[1] != []

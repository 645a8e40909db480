"""Weight averaging (train.average): the weights validation, best.pt, sampling and serving use.

Late in training the weights wander around a minimum with every step's noise; an average of them
sits nearer its centre and predicts held-out text better than any single step's weights.

  - nt-asgd (Merity, Keskar & Socher 2017, "non-monotonically triggered averaged SGD"): train as
    usual until validation has not improved for train.average_patience evaluations, then keep
    the running mean of the weights after every step from there on:
        w_avg = (1/n) sum of w_k over the n steps since the trigger
    This is what torch.optim.ASGD(t0 = trigger, lambd = 0) averages, on top of any optimizer.
  - ema: an exponential moving average from the first step, w_avg <- d_n w_avg + (1 - d_n) w,
    d_n = min(train.ema_decay, (1 + n) / (10 + n)) after n steps: the last ~1 / (1 - d) steps weigh
    most, and early on (n < ~10 / (1 - d)) the window is a tenth of the steps so far, so a short
    run is not averaged back towards its random start.

torch.optim.swa_utils.AveragedModel keeps the averaged copy and updates it; the trained weights
and the optimizer never see it, so a run with averaging trains exactly as one without it.
Checkpoints hold the averaged weights as their model state (what every reader uses) and, in
last.pt, the trained weights beside them (checkpoint.TRAINED_STATE), so --resume continues both.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rnngen import checkpoint, console


class WeightAverage:
    """The averaged copy of a model under train.average, and when it is in use."""

    def __init__(self, trainer):
        t = trainer.config.train
        self.trainer, self.model, self.mode, self.patience = trainer, trainer.model, t.average, t.average_patience
        self.averaged = None
        self.decay, self.ema_decay = t.ema_decay, t.ema_decay
        if self.mode != "none":
            avg = {"multi_avg_fn": self._ema_update} if self.mode == "ema" else {}
            self.averaged = AveragedModel(self.model, **avg)
            self._flatten()

    @property
    def state(self):
        """The trainer's state (replaced by a resume): averaging_since, averaged_steps."""
        return self.trainer.state

    @property
    def active(self) -> bool:
        return self.averaged is not None and self.state.averaging_since is not None

    def evaluated(self) -> torch.nn.Module:
        """The model whose weights are validated, saved as best.pt and sampled from."""
        return self.averaged.module if self.active and self.state.averaged_steps else self.model

    def after_step(self) -> None:
        """Fold the weights of the step just taken into the average (ema: from the first step on)."""
        if self.mode == "ema" and self.state.averaging_since is None:
            self.state.averaging_since = self.state.step
        if self.active:
            n = self.state.averaged_steps
            self.decay = min(self.ema_decay, (1 + n) / (10 + n))
            self.averaged.update_parameters(self.model)
            self.state.averaged_steps += 1

    def _ema_update(self, averaged: list, current: list, _n_averaged) -> None:
        """torch's EMA update at this step's decay (AveragedModel calls it from the second step on)."""
        get_ema_multi_avg_fn(self.decay)(averaged, current, None)

    def after_evaluation(self) -> None:
        """nt-asgd: start averaging once validation has stalled for `patience` evaluations."""
        s = self.state
        if self.mode == "nt-asgd" and s.averaging_since is None and s.evals_since_best >= self.patience:
            s.averaging_since, s.evals_since_best = s.step, 0
            console.info(
                f"validation has not improved in {self.patience} evaluations: from step {s.step:,} the weights "
                "used are the mean of every step's weights (NT-ASGD)"
            )

    # ----------------------------------------------------------------------- checkpoints

    def saved_states(self) -> tuple[dict, dict]:
        """(the model state every checkpoint holds: the weights in use, extra entries of last.pt)."""
        if self.evaluated() is self.model:
            return self.model.state_dict(), {}
        return self.averaged.module.state_dict(), {checkpoint.TRAINED_STATE: self.model.state_dict()}

    def restore(self, saved: dict, path) -> None:
        """The trained and averaged weights of a saved last.pt (one saved without averaging holds one set)."""
        trained = saved.get(checkpoint.TRAINED_STATE, saved[checkpoint.MODEL_STATE])
        checkpoint.restore(self.model, trained, path)
        if self.averaged is not None:
            checkpoint.restore(self.averaged.module, saved[checkpoint.MODEL_STATE], path)
            self.averaged.n_averaged.fill_(self.state.averaged_steps)
            self._flatten()

    def reset(self) -> None:
        """Forget the average (the weights it was made of diverged); nt-asgd waits for a new trigger."""
        if self.averaged is not None:
            self.averaged.module.load_state_dict(self.model.state_dict())
            self.averaged.n_averaged.zero_()
            self.state.averaged_steps = 0
            self.state.averaging_since = None

    def _flatten(self) -> None:
        """cuDNN wants a recurrent module's weights in one buffer; a deep copy is not yet."""
        rnn = getattr(self.averaged.module, "rnn", None)
        if isinstance(rnn, torch.nn.RNNBase):
            rnn.flatten_parameters()

"""The training loop: truncated BPTT over parallel token streams, with checkpoints you can trust.

One step: set the learning rate, read a (B, T) window, run the model from the carried hidden
state, cross-entropy, backward, clip the global gradient norm, optimizer step, detach the state.
Around it: metrics rows, evaluation, best.pt / last.pt saves and the stop conditions. Every file
is written atomically, Ctrl-C and SIGTERM finish the step and save, and `--resume` restores the
weights, optimizer, schedule, data position, hidden state and RNG states, so the resumed run
matches an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rnngen import checkpoint, console, distributed, regularise
from rnngen import config as config_module
from rnngen.batches import TokenStreams
from rnngen.config import Config
from rnngen.device import resolve_device, rng_state, seed_everything, set_rng_state
from rnngen.diagnose import report_training_gradients
from rnngen.embeddings import load_pretrained
from rnngen.errors import DataError, TrainingFailed, UserError
from rnngen.evaluate import Scores, evaluate_stream
from rnngen.fileio import write_text
from rnngen.model import build_model, count_parameters, detach_state, join_streams, model_args, select_streams
from rnngen.prepare import Prepared, prepare
from rnngen.runs import RunLock, RunPaths, mark_latest
from rnngen.sample import DecodeOptions, encode_seed, generate, seed_text

METRICS_COLUMNS = [
    "step", "epoch", "elapsed_s", "tokens", "train_loss", "val_loss", "val_ppl", "val_bpc",
    "lr", "grad_norm", "clip_rate", "tokens_per_s",
]  # fmt: skip
RNG_PER_RANK = "rng_per_rank"  # checkpoint key: every rank's RNG state, under DDP
MAX_BAD_STEPS = 5  # non-finite steps in close succession before training gives up
BAD_STEP_WINDOW = 50  # ... where "close" means fewer than this many steps apart


# --------------------------------------------------------------------------- schedule


def schedule_progress(train_config, step: int, elapsed_s: float, windows_per_epoch: int) -> float:
    """How far along the decay is, 0..1: from decay_steps, else the nearest of the step/epoch/time limits."""
    t = train_config
    if t.decay_steps:
        return min(step / t.decay_steps, 1.0)
    fractions = []
    if t.max_steps:
        fractions.append(step / t.max_steps)
    if t.max_epochs:
        fractions.append(step / (t.max_epochs * windows_per_epoch))
    if t.max_minutes:
        fractions.append(elapsed_s / (t.max_minutes * 60))
    return min(max(fractions, default=0.0), 1.0)


def learning_rate(train_config, step: int, progress: float) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio (or constant): a pure function."""
    t = train_config
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule != "cosine":
        return t.lr
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------- state


@dataclass
class TrainerState:
    """Everything besides weights and optimizer that a resume needs."""

    step: int = 0
    epoch: int = 0
    window: int = 0  # next window of the epoch
    tokens: int = 0
    elapsed_s: float = 0.0  # training wall time, summed over resumes
    lr_scale: float = 1.0  # lowered after non-finite losses and on validation plateaus
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    last_val: dict | None = None
    last_train_loss: float | None = None
    hidden: list | None = None  # carried hidden state (tensors)
    column: int = 0  # train.variable_bptt: next column of the streams (windows differ in length)
    embeddings: dict | None = None  # coverage of the pre-trained vectors the run started from
    recent_bad_steps: int = 0  # non-finite steps with fewer than BAD_STEP_WINDOW good steps between them
    last_bad_step: int = -1

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    reason: str
    best_val_loss: float
    last_val: dict | None = None
    interrupted: bool = False
    notes: list = field(default_factory=list)


class _StopRequest:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, saves and exits."""

    def __init__(self):
        self.signal_name = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): keep the defaults
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        console.info(f"\n{self.signal_name} received: finishing this step and saving last.pt ...")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- entry point


def train(config: Config, resume: bool = False, overwrite: bool = False, resolve_again=None) -> TrainResult:
    """Train the model that `config` describes; `resolve_again(base)` re-resolves it over a checkpoint's config.

    Under torchrun every rank calls this; rank 0 alone locks and writes the run directory.
    """
    paths = RunPaths(config.train.out_dir)
    group, device = distributed.join(resolve_device(config.train.device))
    if not group.is_writer:
        console.quiet_unless_verbose()
    try:
        with RunLock(paths) if group.is_writer else contextlib.nullcontext():
            return _train_locked(config, paths, resume, overwrite, resolve_again, group, device)
    finally:
        distributed.leave(group)


def _train_locked(config, paths, resume, overwrite, resolve_again, group, device) -> TrainResult:
    previous = None
    if group.is_writer and paths.last.exists() and not resume and not overwrite:
        raise UserError(
            f"{paths.root} already holds a training run (last.pt); continue it with --resume, "
            "start over with --overwrite, or set a different train.out_dir"
        )
    if resume:
        if not paths.last.exists():
            raise UserError(f"nothing to resume: {paths.last} does not exist; start the run without --resume")
        previous = checkpoint.load(paths.last)
        config = _config_for_resume(config, previous, resolve_again)
    elif overwrite and group.is_writer:
        for stale in (paths.last, paths.best, paths.metrics):
            stale.unlink(missing_ok=True)
    if config.model.cell == "ngram":  # counted in one pass, not trained: same run files, same checkpoint format
        from rnngen.ngram import train_ngram

        return train_ngram(config, paths)
    return Trainer(config, paths, previous, group, device).run()


def _config_for_resume(config: Config, previous: dict, resolve_again) -> Config:
    """Architecture and data come from the checkpoint; the rest from the command line over the saved config."""
    saved = previous[checkpoint.CONFIG]
    merged = resolve_again(saved) if resolve_again else config
    saved_config = config_module.from_dict(saved)
    for section in ("model", "data"):
        ours, theirs = getattr(merged, section), getattr(saved_config, section)
        if ours != theirs:
            changed = [k for k in vars(ours) if getattr(ours, k) != getattr(theirs, k)]
            console.warn(
                f"--resume keeps the checkpoint's {section} settings; ignoring changes to {', '.join(changed)}"
            )
    return merged.replace(model=saved_config.model, data=saved_config.data)


class _LossModel(torch.nn.Module):
    """model.training_loss as a forward(), so DistributedDataParallel and torch.compile can wrap it.

    Returns (objective, cross-entropy, state): the objective adds AR/TAR (train.ar_alpha, tar_beta).
    """

    def __init__(self, model, ar_alpha: float = 0.0, tar_beta: float = 0.0):
        super().__init__()
        self.model = model
        self.ar_alpha, self.tar_beta = ar_alpha, tar_beta

    def forward(self, token_ids, targets, state=None):
        return self.model.training_loss(token_ids, targets, state, self.ar_alpha, self.tar_beta)


class Trainer:
    def __init__(self, config: Config, paths: RunPaths, previous: dict | None, group=None, device=None):
        self.config = config
        self.paths = paths
        self.group = group or distributed.Group()
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = device or resolve_device(t.device)
        seed_everything(t.seed)
        if self.group.is_writer:  # rank 0 prepares; the others then find the data up to date
            self.prepared: Prepared = prepare(config)
        distributed.barrier(self.group)
        if not self.group.is_writer:
            self.prepared = prepare(config)
        self.vocab = self.prepared.vocab
        self.streams = TokenStreams(
            self.prepared.ids("train"), t.batch_size, t.seq_len, self.group.rank, self.group.world_size
        )
        self.val_ids = self.prepared.ids("val")
        if len(self.val_ids) < 2:
            raise DataError("the validation split has fewer than 2 tokens; raise data.val_fraction or give more text")
        # a resumed run rebuilds exactly the module it saved; a new run derives it from the config
        self.model_args = previous[checkpoint.MODEL_ARGS] if previous else model_args(config.model, len(self.vocab))
        self.model = build_model(self.model_args).to(self.device)
        if self.group.rank > 0:  # same initial weights everywhere, different dropout masks per rank
            torch.manual_seed(t.seed + self.group.rank)
        self.autocast_dtype = _autocast_dtype(t.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.loss_model = _LossModel(self.model, t.ar_alpha, t.tar_beta)
        if self.group.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss_model = DistributedDataParallel(self.loss_model, device_ids=ids)
        if t.compile:
            self.loss_model = torch.compile(self.loss_model)
        self.optimizer = self._make_optimizer()
        self.state = TrainerState()
        self.metrics_rows: list[dict] = []
        if previous is not None:
            self._restore(previous)
        else:  # pre-trained vectors are read once, when the run starts; a resume has them in its weights
            self.state.embeddings = load_pretrained(self.model, config.model, self.vocab)
        self.hidden = self._hidden_to_device(self.state.hidden)

    def _make_optimizer(self):
        t = self.config.train
        params = list(self.model.parameters())
        if t.optimizer == "sgd":
            return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)

    def _restore(self, previous: dict) -> None:
        if previous[checkpoint.VOCAB]["tokens"] != self.vocab.tokens:
            raise UserError(
                f"the prepared data's vocabulary differs from the checkpoint's in {self.paths.root}; "
                "the input text changed since the run started. Restore it, or start a new run (--overwrite)"
            )
        self.model.load_state_dict(previous[checkpoint.MODEL_STATE])
        self.optimizer.load_state_dict(previous[checkpoint.OPTIMIZER_STATE])
        known = TrainerState.__dataclass_fields__
        self.state = TrainerState(**{k: v for k, v in previous[checkpoint.TRAINER_STATE].items() if k in known})
        self.state.hidden = self._my_rows(self.state.hidden)
        per_rank = previous.get(RNG_PER_RANK)
        if per_rank and len(per_rank) == self.group.world_size:
            set_rng_state(per_rank[self.group.rank])
        else:
            set_rng_state(previous[checkpoint.RNG])
        self.metrics_rows = [r for r in _read_metrics(self.paths.metrics) if int(r["step"]) <= self.state.step]
        console.info(f"resuming {self.paths.root} at step {self.state.step:,} (epoch {self.state.epoch})")

    def _my_rows(self, hidden):
        """This rank's rows of a saved hidden state (saved with the rows of all ranks in rank order)."""
        if hidden is None or not self.group.enabled:
            return hidden
        rows = self.config.train.batch_size
        if hidden[0].size(1) != rows * self.group.world_size:
            console.warn("the saved hidden state does not fit this number of processes; starting from zeros")
            return None
        return [h[:, self.group.rank * rows : (self.group.rank + 1) * rows] for h in hidden]

    def _hidden_to_device(self, hidden):
        if hidden is None:
            return None
        tensors = [h.to(self.device) for h in hidden]
        return tuple(tensors) if self.model_args["cell"] == "lstm" else tensors[0]

    # ----------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        t, s, paths, group = self.config.train, self.state, self.paths, self.group
        if group.is_writer:
            paths.root.mkdir(parents=True, exist_ok=True)
            write_text(paths.config, config_module.to_yaml(self.config))
            mark_latest(paths.root)
        processes = f" x {group.world_size} processes" if group.enabled else ""
        console.info(
            f"training {self.model_args['cell']} {self.model_args['num_layers']}x{self.model_args['hidden_size']} "
            f"({count_parameters(self.model):,} parameters) on {self.device}: "
            f"{self.streams.windows:,} windows of {t.batch_size}x{t.seq_len} tokens{processes} per epoch -> {paths.root}"
        )
        bar = console.progress(total=t.max_steps, initial=s.step, unit="step", desc="train")
        log_every_line = not console.bars_enabled()
        window_loss, window_steps, window_norm, window_clipped = 0.0, 0, 0.0, 0
        step_norms = []  # every step's gradient norm (non-finite where skipped), for the end-of-training summary
        window_start, window_tokens = time.monotonic(), 0
        session_start = time.monotonic() - s.elapsed_s
        reason = None
        evaluated_at = s.step if any(int(r["step"]) == s.step and r["val_loss"] for r in self.metrics_rows) else -1
        # the lr the closing metrics row shows when no step runs (a run killed after its last save, resumed)
        lr = learning_rate(t, s.step, schedule_progress(t, s.step, s.elapsed_s, self.streams.windows)) * s.lr_scale
        self.model.train()
        with _StopRequest() as stop_request:
            while True:
                s.elapsed_s = time.monotonic() - session_start
                reason = self._stop_reason(stop_request)
                if group.enabled and distributed.any_rank(group, reason is not None, self.device):
                    reason = reason or "another process stopped"  # all ranks stop at the same step
                if reason:
                    break
                # learning rate: a function of the step (and of time, for max_minutes runs)
                progress = schedule_progress(t, s.step, s.elapsed_s, self.streams.windows)
                lr = learning_rate(t, s.step, progress) * s.lr_scale
                # batch: the next window of every stream; the state restarts with each epoch
                x, y = self._next_window()
                for param_group in self.optimizer.param_groups:
                    param_group["lr"] = regularise.scaled_lr(lr, x.size(1), t.seq_len)
                if t.reset_state or s.window == 0:
                    self.hidden = None
                # forward and backward through this window only (truncated BPTT)
                self.optimizer.zero_grad(set_to_none=True)
                loss, hidden = self._forward_backward(x, y)
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                # clip the global gradient norm: exploding gradients are the classic RNN failure
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or math.inf)
                loss_value, norm_value = loss.item(), grad_norm.item()
                step_norms.append(norm_value)
                if group.enabled:  # the mean over all ranks' streams (the gradients already are)
                    loss_value = distributed.sum_over_ranks(group, [loss_value], self.device)[0] / group.world_size
                if self.scaler is not None and math.isfinite(loss_value) and not math.isfinite(norm_value):
                    self.scaler.step(self.optimizer)  # fp16 overflow: the scaler skips the step and lowers its scale
                    self.scaler.update()
                    self.hidden = detach_state(hidden)
                elif math.isfinite(loss_value) and math.isfinite(norm_value):
                    if self.scaler is not None:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    self.hidden = detach_state(hidden)
                    window_loss += loss_value
                    window_norm += norm_value
                    window_clipped += int(t.grad_clip is not None and norm_value > t.grad_clip)
                    window_steps += 1
                else:
                    self._skip_step(loss_value, norm_value)
                # advance the data position
                s.step += 1
                s.tokens += x.numel() * group.world_size
                window_tokens += x.numel() * group.world_size
                self._advance(x.size(1))
                bar.update(1)
                trained_until = time.monotonic()  # tokens/s counts training time, not evaluation or saving
                # log, evaluate, save
                scores = None
                if s.step % t.eval_every == 0:
                    scores = self._evaluate_and_save_best()
                    evaluated_at = s.step
                if group.is_writer and (s.step % t.log_every == 0 or scores is not None):
                    row = self._metrics_row(
                        lr,
                        window_loss,
                        window_steps,
                        window_norm,
                        window_clipped,
                        window_tokens / max(trained_until - window_start, 1e-9),
                        scores,
                    )
                    bar.set_postfix_str(_postfix(row, s.last_val), refresh=False)
                    if log_every_line:
                        console.info(_log_line(row))
                    window_loss, window_steps, window_norm, window_clipped = 0.0, 0, 0.0, 0
                    window_start, window_tokens = time.monotonic(), 0
                if s.step % t.save_every == 0 and (scores is None or math.isfinite(scores.loss)):
                    self._save_last()  # never over the last good weights with ones that just diverged
        bar.close()
        interrupted = reason.startswith("interrupted")
        if not interrupted and evaluated_at != s.step and s.step > 0:
            scores = self._evaluate_and_save_best()
            if group.is_writer:
                self._metrics_row(lr, window_loss, window_steps, window_norm, window_clipped, 0.0, scores)
        self._save_last()
        if group.is_writer:  # the gradients, and so their norms, are the same on every rank
            report_training_gradients(step_norms, t.grad_clip, s.step, settle_steps=t.warmup_steps)
        console.detail(f"rank {group.rank} of {group.world_size}: stopped at step {s.step}")
        console.info(
            f"stopped at step {s.step:,}: {reason}; best validation loss {s.best_val_loss:.4f} -> {paths.root}"
        )
        return TrainResult(paths.root, s.step, reason, s.best_val_loss, s.last_val, interrupted)

    def _next_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (B, T) of the next window; T varies around seq_len with train.variable_bptt."""
        t, s = self.config.train, self.state
        if not t.variable_bptt:
            return self.streams.window(s.window, self.device)
        length = regularise.bptt_length(t.seq_len, t.seed, s.step)
        return self.streams.span(s.column, min(length, self.streams.columns - s.column), self.device)

    def _advance(self, length: int) -> None:
        """Move the data position past a window of `length` steps; a new epoch starts at the end."""
        s = self.state
        s.window += 1
        if self.config.train.variable_bptt:
            s.column += length
            done = s.column >= self.streams.columns
        else:
            done = s.window >= self.streams.windows
        if done:
            s.window, s.column, s.epoch = 0, 0, s.epoch + 1

    def _epoch_progress(self) -> float:
        """Epochs done, with the fraction of the current one."""
        s, streams = self.state, self.streams
        if self.config.train.variable_bptt:
            return s.epoch + s.column / streams.columns
        return s.epoch + s.window / streams.windows

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor):
        """Mean loss over the (B, T) window and the new state, gradients accumulated in the parameters.

        With grad_accum_steps = k the B streams go through in k micro-batches of B/k rows: the
        same gradient as one pass (each micro-loss is weighted by its share of the rows), in a
        k-th of the activation memory. Under DDP, gradients are averaged over ranks once, on the
        last micro-batch.
        """
        k = self.config.train.grad_accum_steps
        rows = [slice(i * x.size(0) // k, (i + 1) * x.size(0) // k) for i in range(k)]
        total = torch.zeros((), device=self.device)
        states = []
        for i, part in enumerate(rows):
            last = i == k - 1
            sync = contextlib.nullcontext() if last or not self.group.enabled else self.loss_model.no_sync()
            with sync:
                with torch.autocast(
                    self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
                ):
                    objective, loss, state = self.loss_model(x[part], y[part], select_streams(self.hidden, part))
                scaled = objective / k
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.detach() / k
            states.append(state)
        return total, join_streams(states)

    def _stop_reason(self, stop_request) -> str | None:
        t, s = self.config.train, self.state
        if stop_request.signal_name:
            return f"interrupted by {stop_request.signal_name}"
        if t.max_steps is not None and s.step >= t.max_steps:
            return f"reached max_steps {t.max_steps}"
        if t.max_epochs is not None and self._epoch_progress() >= t.max_epochs:
            return f"reached max_epochs {t.max_epochs:g}"
        if t.max_minutes is not None and s.elapsed_s >= t.max_minutes * 60:
            return f"reached max_minutes {t.max_minutes:g}"
        if t.target_loss is not None and s.last_val and s.last_val["loss"] <= t.target_loss:
            return f"validation loss {s.last_val['loss']:.4f} reached target_loss {t.target_loss:g}"
        if t.patience is not None and s.evals_since_best >= t.patience:
            return f"no improvement in {t.patience} evaluations (patience)"
        return None

    def _skip_step(self, loss_value: float, norm_value: float) -> None:
        """A non-finite loss or gradient: drop the update, halve the learning rate, restart the state.

        If an earlier (finite-looking) update already pushed the weights to inf/nan, or made them so
        large that the loss overflows, go back to the last saved weights (or fresh ones), so a bad
        step never destroys the run.
        """
        s = self.state
        if s.step - s.last_bad_step > BAD_STEP_WINDOW:
            s.recent_bad_steps = 0
        s.recent_bad_steps += 1
        s.last_bad_step = s.step
        s.lr_scale *= 0.5
        self.hidden = None
        self.optimizer.zero_grad(set_to_none=True)
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        console.warn(
            f"step {s.step}: non-finite {what} ({loss_value:.4g}); skipped the update and halved "
            f"the learning rate (now x{s.lr_scale:g})"
        )
        if not math.isfinite(loss_value) or not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self._roll_back()
        if s.recent_bad_steps >= MAX_BAD_STEPS:
            self._save_last()
            raise TrainingFailed(
                f"the loss was non-finite in {MAX_BAD_STEPS} of the last steps even after lowering the learning rate; "
                f"training stopped (last good weights saved in {self.paths.last}). "
                "Lower train.lr, set train.grad_clip, or check the data"
            )

    def _roll_back(self) -> None:
        if self.paths.last.exists():
            saved = checkpoint.load(self.paths.last)
            self.model.load_state_dict(saved[checkpoint.MODEL_STATE])
            self.optimizer.load_state_dict(saved[checkpoint.OPTIMIZER_STATE])
            console.warn(f"the weights had diverged; went back to the weights of {self.paths.last}")
        else:
            self.model.load_state_dict(build_model(self.model_args).state_dict())
            load_pretrained(self.model, self.config.model, self.vocab)
            self.optimizer = self._make_optimizer()
            console.warn("the weights had diverged before any checkpoint; started again from fresh weights")

    # ----------------------------------------------------------------------- evaluation and files

    def _evaluate_and_save_best(self) -> Scores:
        t, s = self.config.train, self.state
        scores = evaluate_stream(
            self.model, self.val_ids, self.prepared.val_chars, t.eval_batch_size, t.seq_len, self.device, self.group
        )
        s.last_val = scores.to_dict()
        improved = scores.loss < s.best_val_loss
        if improved:
            s.best_val_loss = scores.loss
            s.evals_since_best = 0
            self._save(self.paths.best)
        else:
            s.evals_since_best += 1
            if t.lr_schedule == "plateau":
                s.lr_scale *= t.plateau_factor
                console.info(f"validation loss did not improve; learning rate scaled to x{s.lr_scale:g}")
        if math.isfinite(scores.loss) and self.group.is_writer:  # diverged weights give nothing to sample from
            self._write_sample()
        return scores

    def _write_sample(self) -> None:
        t = self.config.train
        if t.sample_length == 0:
            return
        sample_config = self.config.sample
        try:
            seed_ids = encode_seed(self.vocab, sample_config.seed, "skip")
        except UserError:
            seed_ids = encode_seed(self.vocab, None)
        options = DecodeOptions.from_config(sample_config)
        options.length, options.num_samples, options.stop = t.sample_length, 1, ()
        options.random_seed = self.state.step  # its own generator: training's random stream is untouched
        (sample,) = generate(self.model, self.vocab, seed_ids, options, self.device)
        text = (seed_text(self.vocab, seed_ids) if sample_config.seed else "") + sample.text
        write_text(self.paths.samples / f"step-{self.state.step:07d}.txt", text + "\n")
        self.model.train()

    def _metrics_row(self, lr, loss_sum, steps, norm_sum, clipped, tokens_per_s, scores: Scores | None) -> dict:
        s = self.state
        train_loss = loss_sum / steps if steps else None
        if train_loss is not None:
            s.last_train_loss = train_loss
        row = {
            "step": s.step,
            "epoch": round(self._epoch_progress(), 4),
            "elapsed_s": round(s.elapsed_s, 2),
            "tokens": s.tokens,
            "train_loss": _fmt(train_loss),
            "val_loss": _fmt(scores.loss if scores else None),
            "val_ppl": _fmt(scores.perplexity if scores else None),
            "val_bpc": _fmt(scores.bpc if scores else None),
            "lr": f"{lr:.3g}",
            "grad_norm": _fmt(norm_sum / steps if steps else None),
            "clip_rate": _fmt(clipped / steps if steps else None),
            "tokens_per_s": round(tokens_per_s) if tokens_per_s else "",
        }
        self.metrics_rows.append(row)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(self.metrics_rows)
        write_text(self.paths.metrics, buffer.getvalue())
        return row

    def _save_last(self) -> None:
        """Every rank joins (its hidden rows and RNG state are gathered); rank 0 writes."""
        hidden = self.hidden
        mine = (
            None if hidden is None else [h.detach().cpu() for h in (hidden if isinstance(hidden, tuple) else (hidden,))]
        )
        every_hidden = distributed.gather_objects(self.group, mine)
        every_rng = distributed.gather_objects(self.group, rng_state())
        if not self.group.is_writer:
            return
        if any(h is None for h in every_hidden):
            self.state.hidden = None
        else:  # all ranks' rows side by side, in rank order: (L, world * B, H)
            self.state.hidden = [torch.cat(parts, dim=1) for parts in zip(*every_hidden)]
        extra = {checkpoint.OPTIMIZER_STATE: self.optimizer.state_dict(), checkpoint.RNG: every_rng[0]}
        if self.group.enabled:
            extra[RNG_PER_RANK] = every_rng
        self._save(self.paths.last, extra)

    def _save(self, path: Path, extra: dict | None = None) -> None:
        if not self.group.is_writer:
            return
        s = self.state
        payload = {
            checkpoint.CONFIG: self.config.to_dict(),
            checkpoint.MODEL_ARGS: self.model_args,
            checkpoint.MODEL_STATE: self.model.state_dict(),
            checkpoint.VOCAB: self.vocab.to_dict(),
            checkpoint.TRAINER_STATE: s.to_dict(),
            checkpoint.SUMMARY: {
                "step": s.step,
                "epoch": s.epoch,
                "tokens": s.tokens,
                "elapsed_s": s.elapsed_s,
                "train_loss": s.last_train_loss,
                "val": s.last_val,
                "best_val_loss": s.best_val_loss if math.isfinite(s.best_val_loss) else None,
                "parameters": count_parameters(self.model),
                "prepared": self.prepared.meta["counts"],
                "embeddings": s.embeddings,
            },
        }
        checkpoint.save(path, {**payload, **(extra or {})})


def _autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype for train.precision on this device (None = plain fp32)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs a CUDA GPU (training on {device.type}); use bf16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _postfix(row: dict, last_val: dict | None) -> str:
    """The progress bar's text: train loss, the latest validation loss, speed and learning rate."""
    parts = [f"loss {row['train_loss']}"]
    if last_val:
        parts.append(f"val {last_val['loss']:.4g}")
    parts += [f"{row['tokens_per_s']} tok/s", f"lr {row['lr']}"]
    return ", ".join(parts)


def _log_line(row: dict) -> str:
    text = f"step {row['step']:>7} | epoch {row['epoch']:.2f} | loss {row['train_loss'] or '-':>8}"
    if row["val_loss"]:
        text += f" | val {row['val_loss']} (ppl {row['val_ppl']}, bpc {row['val_bpc']})"
    return (
        text
        + f" | grad {row['grad_norm'] or '-'} clip {row['clip_rate'] or '-'} | {row['tokens_per_s']} tok/s | lr {row['lr']}"
    )


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))

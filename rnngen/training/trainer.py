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
import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rnngen import checkpoint, console, distributed
from rnngen import config as config_module
from rnngen.config import Config
from rnngen.data import windows
from rnngen.data.prepare import Prepared, prepare
from rnngen.data.windows import TokenStreams
from rnngen.device import resolve_device, rng_state, seed_everything, set_rng_state
from rnngen.errors import TrainingFailed, UserError
from rnngen.fileio import write_bytes
from rnngen.generate.evaluate import Scores, evaluate_stream
from rnngen.metrics import metrics_row, read_metrics, write_metrics
from rnngen.models.embeddings import load_pretrained
from rnngen.models.registry import build_model, count_parameters, describe, model_args
from rnngen.models.state import detach_state, join_streams, select_streams, state_from_tensors, state_tensors
from rnngen.runs import RunLock, RunPaths
from rnngen.training import finetune
from rnngen.training.averaging import WeightAverage
from rnngen.training.gradient_summary import report_training_gradients
from rnngen.training.ngram_counting import train_ngram
from rnngen.training.run_files import TrainResult, ValidationSplit, checkpoint_payload, start_run, write_sample

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
    init_from: dict | None = None  # the checkpoint a fine-tuning run started from (finetune.record)
    recent_bad_steps: int = 0  # non-finite steps with fewer than BAD_STEP_WINDOW good steps between them
    last_bad_step: int = -1
    averaging_since: int | None = None  # train.average: the step the averaged weights start from
    averaged_steps: int = 0  # ... and how many steps they average

    def to_dict(self) -> dict:
        return dict(vars(self))


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
    previous = source = None
    if group.is_writer and paths.last.exists() and not resume and not overwrite:
        raise UserError(
            f"{paths.root} already holds a training run (last.pt); continue it with --resume, "
            "start over with --overwrite, or set a different train.out_dir"
        )
    if resume:
        previous = checkpoint.load_for_resume(paths.last, paths.previous, paths.best)
        config = _config_for_resume(config, previous, resolve_again, paths.last)
    else:
        if config.train.init_from:  # before --overwrite clears the run directory, which must not hold the source
            config, source = finetune.load_source(config)
        if overwrite and group.is_writer:
            for stale in (paths.last, paths.previous, paths.best, paths.metrics):
                stale.unlink(missing_ok=True)
    if config.model.cell == "ngram":  # counted in one pass, not trained: same run files, same checkpoint format
        return train_ngram(config, paths)
    return Trainer(config, paths, previous, group, device, source).run()


def _config_for_resume(config: Config, previous: dict, resolve_again, path: Path) -> Config:
    """Architecture, data and source run come from the checkpoint; the rest from the command line over the saved config."""
    saved = previous[checkpoint.CONFIG]
    saved_config = config_module.from_dict(saved, origin=str(path))
    merged = resolve_again(saved) if resolve_again else config
    for section in ("model", "data"):
        finetune.report_ignored(
            section, getattr(merged, section), getattr(saved_config, section), "--resume keeps the checkpoint's"
        )
    train = dataclasses.replace(merged.train, init_from=saved_config.train.init_from)
    return merged.replace(model=saved_config.model, data=saved_config.data, train=train)


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


class MetricsRecorder:
    """metrics.csv: the rows so far, and the sums of the training steps since the last row."""

    def __init__(self, path: Path, rows: list[dict] | None = None):
        self.path = path
        self.rows = rows or []
        self.reset()

    def reset(self) -> None:
        """Start summing a new window of steps (after each row)."""
        self.loss_sum, self.steps, self.norm_sum, self.clipped = 0.0, 0, 0.0, 0
        self.started, self.tokens = time.monotonic(), 0

    def add_step(self, loss: float, norm: float, clipped: bool) -> None:
        """A step whose update was applied (a skipped step counts only its tokens)."""
        self.loss_sum += loss
        self.norm_sum += norm
        self.clipped += int(clipped)
        self.steps += 1

    def tokens_per_s(self, until: float) -> float:
        return self.tokens / max(until - self.started, 1e-9)

    def evaluated(self, step: int) -> bool:
        """Whether the row of this step holds a validation loss (the last step of a resumed run may)."""
        return any(int(r["step"]) == step and r["val_loss"] for r in self.rows)

    def record(self, state: TrainerState, epoch: float, lr: float, scores: Scores | None, tokens_per_s: float) -> dict:
        """Append the row of the steps since the last row and rewrite metrics.csv."""
        s, steps = state, self.steps
        train_loss = self.loss_sum / steps if steps else None
        if train_loss is not None:
            s.last_train_loss = train_loss
        grad_norm, clip_rate = (self.norm_sum / steps, self.clipped / steps) if steps else (None, None)
        row = metrics_row(
            s.step, epoch, s.elapsed_s, s.tokens, train_loss, scores, lr, grad_norm, clip_rate, tokens_per_s
        )
        self.rows.append(row)
        write_metrics(self.path, self.rows)
        return row


class Checkpoints:
    """The trainer's checkpoint state: what best.pt and last.pt hold, writing them, and resuming from last.pt."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def restore(self, previous: dict) -> None:
        """Weights, optimizer, trainer state, RNG states and metrics rows of a saved run."""
        tr = self.trainer
        if previous[checkpoint.VOCAB]["tokens"] != tr.vocab.tokens:
            raise UserError(
                f"the vocabulary of {tr.paths.last} differs from the prepared data's in {tr.prepared.directory}: "
                "the input text changed since the run started (or last.pt comes from another run). "
                "Restore it, or start a new run (--overwrite)"
            )
        checkpoint.restore(tr.optimizer, previous[checkpoint.OPTIMIZER_STATE], tr.paths.last)
        known = TrainerState.__dataclass_fields__
        tr.state = TrainerState(**{k: v for k, v in previous[checkpoint.TRAINER_STATE].items() if k in known})
        tr.average.restore(previous, tr.paths.last)  # the trained weights, and their average
        tr.state.hidden = self._my_rows(tr.state.hidden)
        per_rank = previous.get(RNG_PER_RANK)
        if per_rank and len(per_rank) == tr.group.world_size:
            set_rng_state(per_rank[tr.group.rank])
        else:
            set_rng_state(previous[checkpoint.RNG])
        tr.metrics.rows = [r for r in self._read_metrics() if int(r["step"]) <= tr.state.step]
        console.info(f"resuming {tr.paths.root} at step {tr.state.step:,} (epoch {tr.state.epoch})")

    def _read_metrics(self) -> list[dict]:
        """The whole rows of metrics.csv; a damaged file is kept beside it before it is written again."""
        tr = self.trainer
        rows, damaged = read_metrics(tr.paths.metrics)
        if damaged and tr.group.is_writer:
            kept = tr.paths.metrics.with_name("metrics.damaged.csv")
            write_bytes(kept, tr.paths.metrics.read_bytes())
            console.warn(
                f"{tr.paths.metrics} is damaged: dropped {damaged} broken row(s), kept {len(rows)}; "
                f"the damaged file is saved as {kept}"
            )
        return rows

    def _my_rows(self, hidden):
        """This rank's rows of a saved hidden state (saved with the rows of all ranks in rank order)."""
        group = self.trainer.group
        if hidden is None or not group.enabled:
            return hidden
        rows = self.trainer.config.train.batch_size
        if hidden[0].size(1) != rows * group.world_size:
            console.warn("the saved hidden state does not fit this number of processes; starting from zeros")
            return None
        return [h[:, group.rank * rows : (group.rank + 1) * rows] for h in hidden]

    def hidden_to_device(self, hidden):
        """The saved hidden state (a list of tensors) as the model's state, on the training device."""
        if hidden is None:
            return None
        tr = self.trainer
        return state_from_tensors([h.to(tr.device) for h in hidden], paired=tr.model_args["cell"] == "lstm")

    def save_last(self) -> None:
        """Every rank joins (its hidden rows and RNG state are gathered); rank 0 writes."""
        tr = self.trainer
        hidden = tr.hidden
        mine = None if hidden is None else [h.detach().cpu() for h in state_tensors(hidden)]
        every_hidden = distributed.gather_objects(tr.group, mine)
        every_rng = distributed.gather_objects(tr.group, rng_state())
        if not tr.group.is_writer:
            return
        if any(h is None for h in every_hidden):
            tr.state.hidden = None
        else:  # all ranks' rows side by side, in rank order: (L, world * B, H)
            tr.state.hidden = [torch.cat(parts, dim=1) for parts in zip(*every_hidden)]
        extra = {checkpoint.OPTIMIZER_STATE: tr.optimizer.state_dict(), checkpoint.RNG: every_rng[0]}
        if tr.group.enabled:
            extra[RNG_PER_RANK] = every_rng
        self.save(tr.paths.last, extra, previous=tr.paths.previous, resumable=True)

    def save(self, path: Path, extra: dict | None = None, previous: Path | None = None, resumable=False) -> None:
        """A checkpoint of the weights in use (train.average's when it averages); a resumable one (last.pt)
        also holds the trained weights they average."""
        tr = self.trainer
        if not tr.group.is_writer:
            return
        s = tr.state
        summary = {
            "step": s.step,
            "epoch": s.epoch,
            "tokens": s.tokens,
            "elapsed_s": s.elapsed_s,
            "train_loss": s.last_train_loss,
            "val": s.last_val,
            "best_val_loss": s.best_val_loss if math.isfinite(s.best_val_loss) else None,
            "parameters": count_parameters(tr.model),
            "prepared": tr.prepared.meta["counts"],
            "embeddings": s.embeddings,
            "init_from": s.init_from,
            "averaged_steps": s.averaged_steps,
        }
        weights, trained = tr.average.saved_states()
        extra = {checkpoint.TRAINER_STATE: s.to_dict(), checkpoint.SPELLER: tr.validation.speller, **(extra or {})}
        extra.update(trained if resumable else {})
        payload = checkpoint_payload(tr.config, tr.model_args, weights, tr.vocab, summary, **extra)
        checkpoint.save(path, payload, previous)


class Recovery:
    """What the trainer does after a non-finite loss or gradient: skip, slow down, roll back, or give up."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def skip_step(self, loss_value: float, norm_value: float) -> None:
        """A non-finite loss or gradient: drop the update, halve the learning rate, restart the state.

        If an earlier (finite-looking) update already pushed the weights to inf/nan, or made them so
        large that the loss overflows, go back to the last saved weights (or fresh ones), so a bad
        step never destroys the run.
        """
        tr = self.trainer
        s = tr.state
        if s.step - s.last_bad_step > BAD_STEP_WINDOW:
            s.recent_bad_steps = 0
        s.recent_bad_steps += 1
        s.last_bad_step = s.step
        s.lr_scale *= 0.5
        tr.hidden = None
        tr.optimizer.zero_grad(set_to_none=True)
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        console.warn(
            f"step {s.step}: non-finite {what} ({loss_value:.4g}); skipped the update and halved "
            f"the learning rate (now x{s.lr_scale:g})"
        )
        if not math.isfinite(loss_value) or not all(torch.isfinite(p).all() for p in tr.model.parameters()):
            self._roll_back()
        if s.recent_bad_steps >= MAX_BAD_STEPS:
            tr.checkpoints.save_last()
            raise TrainingFailed(
                f"the loss was non-finite in {MAX_BAD_STEPS} of the last steps even after lowering the learning rate; "
                f"training stopped (last good weights saved in {tr.paths.last}). "
                "Lower train.lr, set train.grad_clip, or check the data"
            )

    def _roll_back(self) -> None:
        tr = self.trainer
        if tr.paths.last.exists():
            saved = checkpoint.load(tr.paths.last)
            tr.average.restore(saved, tr.paths.last)
            tr.optimizer.load_state_dict(saved[checkpoint.OPTIMIZER_STATE])
            console.warn(f"the weights had diverged; went back to the weights of {tr.paths.last}")
        else:
            tr.model.load_state_dict(build_model(tr.model_args).state_dict())
            tr.start_weights()
            tr.average.reset()
            tr.optimizer = make_optimizer(tr.model, tr.config.train)
            console.warn("the weights had diverged before any checkpoint; started again from the initial weights")


class DataPosition:
    """Where training is in the data: the next (B, T) window of the streams, moving past it, epochs done."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def next_window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (B, T) of the next window; T varies around seq_len with train.variable_bptt."""
        tr = self.trainer
        t, s = tr.config.train, tr.state
        if not t.variable_bptt:
            return tr.streams.window(s.window, tr.device)
        length = windows.bptt_length(t.seq_len, t.seed, s.step)
        return tr.streams.span(s.column, min(length, tr.streams.columns - s.column), tr.device)

    def advance(self, x: torch.Tensor) -> None:
        """Move past this window (of every rank's streams); a new epoch starts at the end of the streams."""
        tr = self.trainer
        s, tokens = tr.state, x.numel() * tr.group.world_size
        s.step += 1
        s.tokens += tokens
        tr.metrics.tokens += tokens
        s.window += 1
        if tr.config.train.variable_bptt:
            s.column += x.size(1)
            done = s.column >= tr.streams.columns
        else:
            done = s.window >= tr.streams.windows
        if done:
            s.window, s.column, s.epoch = 0, 0, s.epoch + 1

    def epochs(self) -> float:
        """Epochs done, with the fraction of the current one."""
        tr = self.trainer
        s, streams = tr.state, tr.streams
        if tr.config.train.variable_bptt:
            return s.epoch + s.column / streams.columns
        return s.epoch + s.window / streams.windows


class Trainer:
    """One training run: __init__ sets it up (device, seeds, data, model, AMP, DDP, compile, optimizer,
    resume); run() steps until a stop rule fires.

    Its collaborators each keep one job: DataPosition (the next window, epochs), MetricsRecorder
    (metrics.csv), Checkpoints (best.pt, last.pt and resuming) and Recovery (non-finite steps);
    evaluation and the plateau schedule stay here.
    """

    def __init__(self, config: Config, paths: RunPaths, previous: dict | None, group=None, device=None, source=None):
        """`previous`: last.pt of the run being resumed; `source`: train.init_from's checkpoint (fine-tuning)."""
        self.config = config
        self.source = source if previous is None else None  # kept for a roll-back to the starting weights
        self.paths = paths
        self.group = group or distributed.Group()
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = device or resolve_device(t.device)
        seed_everything(t.seed)
        if self.group.is_writer:  # rank 0 prepares; the others then find the data up to date
            self.prepared: Prepared = prepare(config, source=source)
        distributed.barrier(self.group)
        if not self.group.is_writer:
            self.prepared = prepare(config, source=source)
        self.vocab = self.prepared.vocab
        self.streams = TokenStreams(
            self.prepared.ids("train"), t.batch_size, t.seq_len, self.group.rank, self.group.world_size
        )
        self.validation = ValidationSplit.of(self.prepared)
        # a resumed run rebuilds exactly the module it saved; a new run derives it from the config or its source
        if previous:
            self.model_args = previous[checkpoint.MODEL_ARGS]
        elif self.source:
            self.model_args = finetune.model_args_for(self.source, self.vocab, t.init_from)
        else:
            self.model_args = model_args(config.model, len(self.vocab), self.vocab.tokens)
        self.model = build_model(self.model_args).to(self.device)
        self.state = TrainerState()
        if previous is None:
            self.start_weights()
        _freeze(self.model, t.freeze, self.group.is_writer)
        if self.group.rank > 0:  # same initial weights everywhere, different dropout masks per rank
            torch.manual_seed(t.seed + self.group.rank)
        self.autocast_dtype = _autocast_dtype(t.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.loss_model = _wrap_loss_model(
            _LossModel(self.model, t.ar_alpha, t.tar_beta), self.group, self.device, t.compile
        )
        self.optimizer = make_optimizer(self.model, t)
        self.metrics = MetricsRecorder(paths.metrics)
        self.average = WeightAverage(self)
        self.checkpoints = Checkpoints(self)
        self.recovery = Recovery(self)
        self.position = DataPosition(self)
        if previous is not None:
            self.checkpoints.restore(previous)
        self.hidden = self.checkpoints.hidden_to_device(self.state.hidden)

    def start_weights(self) -> None:
        """A new run's weights: the source's, grown to the vocabulary (train.init_from), else the fresh ones plus
        any pre-trained vectors (read once, when the run starts; a resume has them in its weights)."""
        if self.config.train.init_from:
            self.state.init_from = _grow_from_source(self)
        else:
            self.state.embeddings = load_pretrained(self.model, self.config.model, self.vocab)

    # ----------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        """Step until a stop rule fires; then evaluate (if the last step did not), save last.pt and report."""
        t, s, group = self.config.train, self.state, self.group
        self._announce()
        bar = console.progress(total=t.max_steps, initial=s.step, unit="step", desc="train")
        log_every_line = not console.bars_enabled()
        self.metrics.reset()
        step_norms = []  # every step's gradient norm (non-finite where skipped), for the end-of-training summary
        session_start = time.monotonic() - s.elapsed_s
        reason = None
        evaluated_at = s.step if self.metrics.evaluated(s.step) else -1
        lr = self._learning_rate()  # what the closing metrics row shows when no step runs (resumed after the end)
        self.model.train()
        with _StopRequest() as stop_request:
            while True:
                s.elapsed_s = time.monotonic() - session_start
                reason = stop_reason(t, s, self.position.epochs(), stop_request)
                if group.enabled and distributed.any_rank(group, reason is not None, self.device):
                    reason = reason or "another process stopped"  # all ranks stop at the same step
                if reason:
                    break
                # learning rate: a function of the step (and of time, for max_minutes runs)
                lr = self._learning_rate()
                norm, x = self._step(lr)  # forward, backward, clip, update (or skip) on the next window
                step_norms.append(norm)
                self.position.advance(x)
                bar.update(1)
                trained_until = time.monotonic()  # tokens/s counts training time, not evaluation or saving
                if self._log_evaluate_save(lr, trained_until, bar, log_every_line):
                    evaluated_at = s.step
        bar.close()
        return self._finish(reason, evaluated_at, lr, step_norms)

    def _announce(self) -> None:
        """Create the run directory (rank 0) and say what is trained where."""
        t, paths, group, args = self.config.train, self.paths, self.group, self.model_args
        if group.is_writer:
            start_run(self.config, paths)
        if self.config.recipe_keys and group.is_writer:  # a resume's config comes whole from the checkpoint
            console.info(
                f"recipe {t.recipe} (for data.level {self.config.data.level} and this budget) set what no config did: "
                + ", ".join(self.config.recipe_keys)
            )
        processes = f" x {group.world_size} processes" if group.enabled else ""
        console.info(
            f"training {describe(args)} ({count_parameters(self.model):,} parameters) on {self.device}: "
            f"{self.streams.windows:,} windows of {t.batch_size}x{t.seq_len} tokens{processes} per epoch -> {paths.root}"
        )

    def _learning_rate(self) -> float:
        t, s = self.config.train, self.state
        return learning_rate(t, s.step, schedule_progress(t, s.step, s.elapsed_s, self.streams.windows)) * s.lr_scale

    def _step(self, lr: float) -> tuple[float, torch.Tensor]:
        """One optimizer step on the next window of every stream: the gradient norm (before clipping) and the inputs."""
        t, s, group = self.config.train, self.state, self.group
        # batch: the next window of every stream; the state restarts with each epoch
        x, y = self.position.next_window()
        for param_group in self.optimizer.param_groups:  # a shorter window takes a smaller step (variable_bptt)
            param_group["lr"] = windows.window_lr(lr, x.size(1), t.seq_len)
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
            self.average.after_step()
            self.hidden = detach_state(hidden)
            self.metrics.add_step(loss_value, norm_value, t.grad_clip is not None and norm_value > t.grad_clip)
        else:
            self.recovery.skip_step(loss_value, norm_value)
        return norm_value, x

    def _log_evaluate_save(self, lr: float, trained_until: float, bar, log_every_line: bool) -> bool:
        """Evaluate, write a metrics row and save last.pt when their steps come; True if it evaluated."""
        t, s = self.config.train, self.state
        scores = None
        if s.step % t.eval_every == 0:
            scores = self._evaluate_and_save_best()
        if self.group.is_writer and (s.step % t.log_every == 0 or scores is not None):
            row = self._record(lr, scores, self.metrics.tokens_per_s(trained_until))
            bar.set_postfix_str(_postfix(row, s.last_val), refresh=False)
            if log_every_line:
                console.info(_log_line(row))
            self.metrics.reset()
        if s.step % t.save_every == 0 and (scores is None or math.isfinite(scores.loss)):
            self.checkpoints.save_last()  # never over the last good weights with ones that just diverged
        return scores is not None

    def _finish(self, reason: str, evaluated_at: int, lr: float, step_norms: list[float]) -> TrainResult:
        t, s, group = self.config.train, self.state, self.group
        interrupted = reason.startswith("interrupted")
        if not interrupted and evaluated_at != s.step and s.step > 0:
            scores = self._evaluate_and_save_best()
            if group.is_writer:
                self._record(lr, scores, 0.0)
        self.checkpoints.save_last()
        if group.is_writer:  # the gradients, and so their norms, are the same on every rank
            report_training_gradients(step_norms, t.grad_clip, s.step, settle_steps=t.warmup_steps)
        console.detail(f"rank {group.rank} of {group.world_size}: stopped at step {s.step}")
        console.info(
            f"stopped at step {s.step:,}: {reason}; best validation loss {s.best_val_loss:.4f} -> {self.paths.root}"
        )
        return TrainResult(self.paths.root, s.step, reason, s.best_val_loss, s.last_val, interrupted)

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

    # ----------------------------------------------------------------------- evaluation and the plateau schedule

    def _evaluate_and_save_best(self) -> Scores:
        t, s, v = self.config.train, self.state, self.validation
        scores = evaluate_stream(
            self.average.evaluated(), v.ids, v.chars, t.eval_batch_size, self.device, self.group, v.unk_bits
        )
        s.last_val = scores.to_dict()
        improved = scores.loss < s.best_val_loss
        if improved:
            s.best_val_loss = scores.loss
            s.evals_since_best = 0
            self.checkpoints.save(self.paths.best)
        else:
            s.evals_since_best += 1
            if t.lr_schedule == "plateau":
                s.lr_scale *= t.plateau_factor
                console.info(f"validation loss did not improve; learning rate scaled to x{s.lr_scale:g}")
            self.average.after_evaluation()
        if math.isfinite(scores.loss) and self.group.is_writer:  # diverged weights give nothing to sample from
            self._write_sample()
        return scores

    def _write_sample(self) -> None:
        write_sample(self.average.evaluated(), self.vocab, self.config, self.paths, self.state.step, self.device)
        self.model.train()

    def _record(self, lr: float, scores: Scores | None, tokens_per_s: float) -> dict:
        return self.metrics.record(self.state, self.position.epochs(), lr, scores, tokens_per_s)


def make_optimizer(model: torch.nn.Module, train_config):
    t = train_config
    params = list(model.parameters())
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def stop_reason(train_config, state: TrainerState, epochs: float, stop_request) -> str | None:
    """Why training should stop now (a signal or one of the stop rules), or None to go on."""
    t, s = train_config, state
    if stop_request.signal_name:
        return f"interrupted by {stop_request.signal_name}"
    if t.max_steps is not None and s.step >= t.max_steps:
        return f"reached max_steps {t.max_steps}"
    if t.max_epochs is not None and epochs >= t.max_epochs:
        return f"reached max_epochs {t.max_epochs:g}"
    if t.max_minutes is not None and s.elapsed_s >= t.max_minutes * 60:
        return f"reached max_minutes {t.max_minutes:g}"
    if t.target_loss is not None and s.last_val and s.last_val["loss"] <= t.target_loss:
        return f"validation loss {s.last_val['loss']:.4f} reached target_loss {t.target_loss:g}"
    if t.patience is not None and s.evals_since_best >= t.patience:
        return f"no improvement in {t.patience} evaluations (patience)"
    return None


def _wrap_loss_model(loss_model: _LossModel, group, device: torch.device, compile_model: bool) -> torch.nn.Module:
    """The loss module, wrapped in DistributedDataParallel and torch.compile when they are on."""
    if group.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        loss_model = DistributedDataParallel(loss_model, device_ids=ids)
    if compile_model:
        loss_model = torch.compile(loss_model)
    return loss_model


def _autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype for train.precision on this device (None = plain fp32)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs a CUDA GPU (training on {device.type}); use bf16 or fp32")
    if precision == "bf16" and device.type == "cpu" and not _cpu_runs_bf16_rnns():
        raise UserError("train.precision: bf16 recurrent layers are not supported on this CPU (oneDNN); use fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _cpu_runs_bf16_rnns() -> bool:
    """Whether this CPU's kernels run a recurrent layer under bf16 autocast (oneDNN needs AVX-512 for it)."""
    probe = torch.nn.LSTM(2, 2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            probe(torch.zeros(1, 1, 2))
    except RuntimeError:
        return False
    return True


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
        text += f" | val {row['val_loss']} (ppl {row['val_ppl']}, bpc {row['val_bpc']}, open {row['val_bpc_open']})"
    return (
        text
        + f" | grad {row['grad_norm'] or '-'} clip {row['clip_rate'] or '-'} | {row['tokens_per_s']} tok/s | lr {row['lr']}"
    )


def _grow_from_source(trainer: Trainer) -> dict:
    """train.init_from's weights, grown to this run's vocabulary; what finetune.record says of the source."""
    t, source = trainer.config.train, trainer.source
    trainer.model.load_state_dict(finetune.grown_state(source, trainer.model_args, t.seed))
    if trainer.group.is_writer:
        console.info(finetune.describe_start(source, t.init_from, trainer.vocab, t))
    return finetune.record(source, t.init_from, trainer.vocab)


def _freeze(model: torch.nn.Module, parts, announce: bool) -> None:
    """train.freeze, applied before DDP, which only syncs parameters that train."""
    frozen = finetune.freeze(model, parts)
    if frozen and announce:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        console.info(f"frozen: {', '.join(frozen)}; training {trainable:,} of {count_parameters(model):,}")

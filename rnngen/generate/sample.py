"""Generate text: warm the hidden state with the seed, then draw one token at a time.

Each step feeds only the newest token and the carried state (never the whole history), turns
the logits into a distribution (no `<unk>` unless allowed, repetition penalty, temperature,
top-k, top-p) and draws from it. Several samples run together as one batch, sharing the warmed seed state.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from rnngen import console
from rnngen.config import SampleConfig
from rnngen.data.vocab import UNK_ID, Vocab
from rnngen.errors import UserError
from rnngen.models.cpu_single_step import stepper_for
from rnngen.models.precision import check_precision
from rnngen.models.recurrent import RNNLM
from rnngen.models.state import map_state

_DEFAULTS = SampleConfig()  # the only place sampling defaults are stated is config.SampleConfig


@dataclass
class DecodeOptions:
    """How to decode: the generation settings of the sample: section (not seed, on_unknown, include_seed)."""

    length: int = _DEFAULTS.length
    temperature: float = _DEFAULTS.temperature
    top_k: int | None = _DEFAULTS.top_k
    top_p: float | None = _DEFAULTS.top_p
    repetition_penalty: float = _DEFAULTS.repetition_penalty
    num_samples: int = _DEFAULTS.num_samples
    random_seed: int | None = _DEFAULTS.random_seed
    stop: tuple[str, ...] = _DEFAULTS.stop
    max_time: float | None = _DEFAULTS.max_time
    allow_unk: bool = _DEFAULTS.allow_unk
    precision: str = _DEFAULTS.precision

    @classmethod
    def from_config(cls, sample_config) -> DecodeOptions:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in vars(sample_config).items() if k in names})


# --------------------------------------------------------------------------- the maths


def filter_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits of each row (B, V); the rest become -inf."""
    if k is None or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus sampling)."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= p  # mass before this token already reaches p
    drop[..., 0] = False  # the most likely token always stays
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens already generated less likely: positive logits divided, negative multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


@functools.cache
def _unk_index(device: torch.device) -> torch.Tensor:
    return torch.tensor([UNK_ID], device=device)


def forbid_unk(logits: torch.Tensor) -> torch.Tensor:
    """Give the unknown token (id 0) zero probability, so a sample never prints `<unk>`."""
    return logits.index_fill(-1, _unk_index(logits.device), float("-inf"))


def _finite(logits: torch.Tensor) -> torch.Tensor:
    """Diverged weights can give nan or inf scores: nan becomes impossible, +inf the largest float,
    and a row with nothing possible left becomes uniform, so sampling never crashes on them."""
    if math.isfinite(logits.amax(dim=-1).sum().item()):  # every row's max finite: no nan, no +inf, none dead
        return logits  # (-inf stays -inf, where mending would give the lowest float: the same probabilities)
    logits = torch.nan_to_num(logits, nan=float("-inf"), posinf=torch.finfo(logits.dtype).max)
    dead = torch.isneginf(logits).all(dim=-1, keepdim=True)  # (B, 1)
    return torch.where(dead, torch.zeros_like(logits), logits)


def draw(logits: torch.Tensor, options: DecodeOptions, generators: list[torch.Generator] | None) -> torch.Tensor:
    """One token id per row of logits (B, V), following the decoding options.

    With per-sample generators, row i draws only from generators[i], so sample i of a batch is
    the same text as a single run with random seed random_seed + i.
    """
    if options.temperature == 0:
        return _finite(logits).argmax(dim=-1)  # greedy
    probs = final_probs(logits, options)  # (B, V)
    if generators is None:
        uniforms = torch.rand(len(probs), dtype=torch.float64, device=probs.device)
    else:  # one number per row from the row's own generator: cheap, unlike one multinomial call per row
        draws = [torch.rand(1, generator=g, dtype=torch.float64, device=g.device) for g in generators]
        uniforms = draws[0] if len(draws) == 1 else torch.cat(draws)
    return inverse_cdf(probs, uniforms)


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The token of each row of probs (B, V) whose cumulative probability first passes uniforms (B,) in [0, 1).

    Token v is drawn with probability probs[v] / sum(probs); a token of probability 0 never is.
    """
    cdf = probs.double().cumsum(dim=-1)  # (B, V), float64 so that 100,000-token vocabularies keep their tails
    picked = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True).squeeze(1)  # (B,)
    # A token of probability 0 adds exactly 0 to the cdf, so it is never the first to pass u * total; only
    # u * total rounding up to the total can run past the end, and then the last possible token is meant.
    if picked.max().item() >= probs.size(-1):
        picked = torch.minimum(picked, (probs > 0).cumsum(dim=-1).argmax(dim=-1))
    return picked


def final_probs(logits: torch.Tensor, options: DecodeOptions) -> torch.Tensor:
    """The distribution (B, V) the next token is drawn from: after temperature, top-k and top-p.

    Greedy decoding (temperature 0) puts all the probability on the most likely token.
    """
    if options.temperature == 0:
        greedy = _finite(logits).argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits, dtype=torch.float).scatter_(-1, greedy, 1.0)
    logits = filter_top_p(filter_top_k(_finite(logits / options.temperature), options.top_k), options.top_p)
    return torch.softmax(logits, dim=-1)


def choose(
    logits: torch.Tensor, seen: torch.Tensor | None, options: DecodeOptions, generators: list[torch.Generator] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The next token of every row of logits (B, V): its id (B,), its log-probability (B,), and the
    logits after the repetition penalty (what temperature, top-k and top-p then work on).

    `seen` (B, V) marks the tokens each row has generated; it is needed only when the penalty is on.
    """
    logits = logits.float() if options.allow_unk else forbid_unk(logits.float())
    logits = penalise_repeats(logits, seen, options.repetition_penalty)
    next_ids = draw(logits, options, generators)  # (B,)
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, next_ids[:, None]).squeeze(1)  # (B,)
    return next_ids, logprobs, logits


@contextlib.contextmanager
def native_rnn_kernels(device: torch.device):
    """Run recurrent layers on ATen's own CPU kernels instead of oneDNN's.

    oneDNN's fused RNN pays a large set-up cost on every call: for one token at a time it is
    about 10x slower than ATen's kernel. Training (long windows, big batches) keeps oneDNN.
    """
    if device.type != "cpu":
        yield
        return
    with warnings.catch_warnings():  # torch warns about TF32 on Intel GPUs whenever these flags change
        warnings.simplefilter("ignore")
        flags = torch.backends.mkldnn.flags(enabled=False)
        flags.__enter__()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flags.__exit__(None, None, None)


@contextlib.contextmanager
def _torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- seeds


def encode_seed(vocab: Vocab, seed: str | None, on_unknown: str = "error") -> list[int]:
    """Seed text -> token ids with the model's own tokenizer; unknown tokens handled per on_unknown."""
    if seed is None or seed == "":
        start = "\n" if "\n" in vocab.index else vocab.tokens[min(1, len(vocab) - 1)]
        return [vocab.index[start]]
    pieces = vocab.split(seed)
    if not pieces:
        raise UserError(
            f"the seed text {seed!r} has no tokens at {vocab.level} level; give a seed with some text in it"
        )
    unknown = vocab.unknown(pieces)
    if unknown:
        pieces = _resolve_unknown(vocab, pieces, unknown, on_unknown)
    if not pieces:
        raise UserError(f"no token of the seed {seed!r} is in the vocabulary; choose another seed")
    return vocab.encode(pieces)


def _resolve_unknown(vocab: Vocab, pieces: list[str], unknown: list[str], mode: str) -> list[str]:
    shown = ", ".join(repr(t) for t in unknown[:10])
    if mode == "error":
        hints = []
        for token in unknown[:5]:
            near = vocab.nearest(token)
            if near:
                hints.append(f"{token!r} -> {' / '.join(repr(n) for n in near)}")
        suggestion = f"; closest known: {'; '.join(hints)}" if hints else ""
        raise UserError(
            f"seed token(s) not in the model's vocabulary: {shown}{suggestion}. "
            "Choose another seed, or pass --on-unknown unk|skip|nearest"
        )
    if mode == "unk":
        console.info(f"seed: mapped {shown} to <unk>")
        return [vocab.tokens[UNK_ID] if t in unknown else t for t in pieces]
    if mode == "skip":
        console.info(f"seed: skipped {shown}")
        return [t for t in pieces if t not in unknown]
    replaced, out = {}, []
    for token in pieces:
        if token in unknown:
            near = vocab.nearest(token, n=1)
            replaced[token] = near[0] if near else vocab.tokens[UNK_ID]
            token = replaced[token]
        out.append(token)
    console.info("seed: replaced " + ", ".join(f"{k!r} with {v!r}" for k, v in replaced.items()))
    return out


# --------------------------------------------------------------------------- generation


class _StopWatch:
    """Text of one sample; holds back just enough characters to catch a stop text that spans pieces."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.done = False

    def add(self, piece: str) -> str:
        self.text += piece
        for stop in self.stops:
            found = self.text.find(stop, self.emitted)
            if found >= 0:
                self.text = self.text[:found]
                self.done = True
                return self.flush()
        safe = max(self.emitted, len(self.text) - self.hold)
        out, self.emitted = self.text[self.emitted : safe], safe
        return out

    def flush(self) -> str:
        out, self.emitted = self.text[self.emitted :], len(self.text)
        return out


@dataclass
class Sample:
    seed: str
    text: str = ""  # generated text only
    tokens: int = 0
    ids: list[int] = field(default_factory=list)  # generated token ids
    logprob_sum: float = 0.0
    stopped_by: str = field(default="length")

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / self.tokens if self.tokens else 0.0


class Decoding:
    """The per-sample side of one generation: random generators, tokens seen so far, stop texts and
    the text itself. The model side (seed warm-up, one step per token) is run by whoever holds it:
    Generation for one request, rnngen.serve.batcher for many requests sharing one batch.
    """

    def __init__(self, vocab: Vocab, seed_ids: list[int], options: DecodeOptions, device, seed: str = ""):
        n = options.num_samples
        self.vocab, self.options = vocab, options
        self.samples = [Sample(seed=seed) for _ in range(n)]
        self.generators = None
        if options.random_seed is not None:
            self.generators = [torch.Generator(device=device).manual_seed(options.random_seed + i) for i in range(n)]
        self.seen = None  # (N, V) tokens generated so far: only the repetition penalty needs them
        if options.repetition_penalty != 1.0:
            self.seen = torch.zeros(n, len(vocab), dtype=torch.bool, device=device)
        self.watches = [_StopWatch(options.stop) for _ in range(n)]
        self.detokenizers = [vocab.detokenizer() for _ in range(n)]
        for detokenizer in self.detokenizers:  # spacing and partial characters continue from the seed
            for token in vocab.decode(seed_ids):
                detokenizer.piece(token)
        self.steps = 0
        self.started = time.monotonic()

    def more(self) -> bool:
        """Whether another token is wanted: the length is not reached and some sample has not stopped."""
        return self.steps < self.options.length and not all(w.done for w in self.watches)

    def out_of_time(self) -> bool:
        """True once options.max_time has passed; the samples still running are marked as stopped by it."""
        max_time = self.options.max_time
        if max_time is None or time.monotonic() - self.started <= max_time:
            return False
        for sample, watch in zip(self.samples, self.watches):
            sample.stopped_by = sample.stopped_by if watch.done else "max_time"
        return True

    def choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next token of every sample from the model's logits (N, V); see `choose`."""
        return choose(logits, self.seen, self.options, self.generators)

    def record(self, next_ids: list[int], logprobs: list[float]) -> list[str]:
        """Take in one drawn token per sample; returns the new text of each ("" once it has stopped)."""
        self.steps += 1
        if self.seen is not None:
            rows = torch.arange(len(next_ids), device=self.seen.device)
            self.seen[rows, torch.tensor(next_ids, device=self.seen.device)] = True
        out = []
        for sample, watch, detokenizer, token_id, logprob in zip(
            self.samples, self.watches, self.detokenizers, next_ids, logprobs
        ):
            if watch.done:
                out.append("")
                continue
            token = self.vocab.tokens[token_id]
            piece = detokenizer.piece(token)
            sample.tokens += 1
            sample.ids.append(token_id)
            sample.logprob_sum += logprob if math.isfinite(logprob) else 0.0
            out.append(watch.add(piece))
            if watch.done:
                sample.stopped_by = "stop"
        return out

    def finish(self) -> list[str]:
        """The text each sample still held back; the samples' texts are complete after this."""
        out = [w.add(d.flush()) + w.flush() if not w.done else "" for w, d in zip(self.watches, self.detokenizers)]
        for sample, watch in zip(self.samples, self.watches):
            sample.text = watch.text
        return out


class ModelSteps:
    """How a model runs while sampling: over the seed once, then one token at a time.

    On the CPU a recurrent model steps through rnngen.models.cpu_single_step at `precision` (its
    weights packed, or converted to bf16 or int8, once per load); anything else runs the model itself.
    """

    def __init__(self, model, device: torch.device, precision: str = "fp32"):
        if precision != "fp32" and not isinstance(model, RNNLM):
            raise UserError(
                f"sample.precision {precision} converts the weight matrices of rnn, lstm and gru models; "
                "this model is none of them (an n-gram model counts tokens, an HMM keeps its tables); "
                "use --precision fp32"
            )
        check_precision(precision, device)
        self.model, self.device, self.precision = model, device, precision
        self.stepper = stepper_for(model, precision) if device.type == "cpu" and isinstance(model, RNNLM) else None

    def warm(self, seed_ids: list[int], num_samples: int) -> tuple[torch.Tensor, object]:
        """The logits (N, V) of the first token after the seed and the state, for N samples."""
        seed_tensor = torch.tensor([seed_ids], dtype=torch.long, device=self.device)  # (1, S)
        if self.precision == "fp32":  # the fused module: one call for the whole seed
            with native_rnn_kernels(self.device):
                logits, state = self.model(seed_tensor, None)  # (1, S, V)
        else:  # the seed read at the same precision as the steps that follow it
            logits, state = self.stepper(seed_tensor)
        return logits[:, -1].expand(num_samples, -1), _repeat_state(state, num_samples)

    def step(self, token_ids: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """Feed one token per sample (N,) with the state carried: the logits (N, V) of the next and the new state."""
        if self.stepper is not None:
            return self.stepper.step(token_ids, state)
        logits, state = self.model(token_ids[:, None], state)  # (N, 1, V)
        return logits[:, -1], state


class Generation:
    """Iterating yields, after every step, the new text of each sample ("" once it has stopped).

    When the iteration ends, `samples` holds the finished records (text, token count, log-prob).
    """

    def __init__(self, model, vocab: Vocab, seed_ids: list[int], options: DecodeOptions, device=None, seed: str = ""):
        self.model, self.seed_ids, self.options = model, seed_ids, options
        self.device = (
            device or next(itertools.chain(model.parameters(), model.buffers())).device
        )  # n-grams: buffers only
        self.steps = ModelSteps(model, self.device, options.precision)  # refuses a precision before any output
        self.decoding = Decoding(vocab, seed_ids, options, self.device, seed)
        self.samples = self.decoding.samples

    def __iter__(self) -> Iterator[list[str]]:
        with contextlib.ExitStack() as stack, torch.inference_mode():
            yield from self._steps(stack)

    def _steps(self, stack: contextlib.ExitStack) -> Iterator[list[str]]:
        decoding, steps = self.decoding, self.steps
        self.model.eval()
        if steps.stepper is not None and self.options.num_samples == 1:
            stack.enter_context(_torch_threads(1))  # one sample: the matrices are too small to share
        logits, state = steps.warm(self.seed_ids, self.options.num_samples)  # once for all samples
        decoding.started = time.monotonic()
        while decoding.more() and not decoding.out_of_time():
            next_ids, logprobs, _ = decoding.choose(logits)
            yield decoding.record(next_ids.tolist(), logprobs.tolist())
            if decoding.more():
                logits, state = steps.step(next_ids, state)  # one token
        yield decoding.finish()


def _repeat_state(state, n: int):
    if n == 1:
        return state
    return map_state(lambda s: s.repeat_interleave(n, dim=1) if s.dim() == 3 else s.repeat_interleave(n, dim=0), state)


def seed_text(vocab: Vocab, seed_ids: list[int]) -> str:
    return vocab.join(vocab.decode(seed_ids))


def generate(
    model, vocab: Vocab, seed_ids: list[int], options: DecodeOptions, device=None, seed: str = ""
) -> list[Sample]:
    """Run generation to the end and return the samples."""
    generation = Generation(model, vocab, seed_ids, options, device, seed)
    for _ in generation:
        pass
    return generation.samples

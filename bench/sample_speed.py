"""Sampling speed of a char-level 2x512 LSTM against this machine's own memory bound, at fp32, bf16 and int8.

One sample reads every recurrent and output weight once per token, so it can go no faster than
the machine reads a buffer of that many bytes. This script measures, in one run:
  - the bytes of weights one token reads, at each precision (sample.precision);
  - the bandwidth at which torch repeatedly reads a buffer of exactly that size (buffer.sum()) with
    the threads one sample uses (one), cache effects included, and the bound: bandwidth / bytes;
  - tokens/s of one sample at each precision, each measured right after its bound, as a ratio to it
    (ROUNDS rounds of ONE_SAMPLE_TOKENS tokens, medians reported: ratios survive a busy machine
    better than rates do);
  - tokens/s of 32 samples in one batch at each precision (torch's own threads; median of 3);
  - the validation loss at each precision, on a model trained TRAIN_STEPS steps on tiny Shakespeare,
    and how many of GREEDY_TOKENS greedy tokens come out as at fp32;
  - the wall time of `rnngen sample --length 300` from process start, next to `import torch`.
bf16 is measured only where the CPU has bf16 instructions. Takes about two minutes.
Goals (issue 30): fp32 one sample >= 0.5 of its bound (stretch 0.7); int8 >= 2x fp32 tokens/s with
a validation loss within 0.5% of fp32's.
    python bench/sample_speed.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import torch
from common import SHAKESPEARE, report, run_cli, scratch

TRAIN_STEPS = 300  # about a minute on the quiet 2-core machine: enough structure in the weights to compare losses
ROUNDS = 10  # short rounds, each right after its bound: a busy spell of the machine spoils one, not the median
ONE_SAMPLE_TOKENS, BATCH, BATCH_TOKENS, GREEDY_TOKENS = 300, 32, 100, 500


def make_checkpoint(steps: int | None = None):
    """The char 2x512 LSTM: trained 2 steps (the weights all but random: speed only), or `steps` steps."""
    work = scratch("sample_speed")
    data = SHAKESPEARE if SHAKESPEARE.exists() else None
    if data is None:
        data = work / "text.txt"
        data.write_text("the quick brown fox jumps over the lazy dog.\n" * 20000)
    run = work / ("trained" if steps else "run")
    stop = [f"train.max_steps={steps}", "train.batch_size=16", "train.seq_len=64", "train.warmup_steps=10",
            "train.eval_every=100000"] if steps else ["train.max_steps=2", "train.batch_size=8", "train.seq_len=32",
                                                        "train.eval_every=2"]  # fmt: skip
    sets = ["data.path=" + str(data), "model.num_layers=2", "model.hidden_size=512", "model.embedding_dim=64",
            "train.max_epochs=null", "train.sample_length=0", f"train.out_dir={run}", "train.device=cpu", *stop]  # fmt: skip
    run_cli("-q", "train", *[x for s in sets for x in ("--set", s)], "--overwrite")
    return run


def read_seconds(nbytes: int, threads: int, repeats: int = 50) -> float:
    """Seconds torch takes to read a float32 buffer of `nbytes` once, when it does so over and over."""
    buffer = torch.ones(nbytes // 4)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buffer.sum()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                buffer.sum()
            times.append((time.perf_counter() - start) / repeats)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def tokens_per_s(model, precision: str, num_samples: int, length: int) -> float:
    start = time.perf_counter()
    model.sample("The", length=length, num_samples=num_samples, temperature=0.8, random_seed=0, precision=precision)
    return num_samples * length / (time.perf_counter() - start)


def validation_loss(model, precision: str, rows: int = 32, window: int = 64) -> float:
    """Mean nats per token over the validation split, every step taken by the sampling stepper at `precision`."""
    from rnngen.data.windows import evaluation_blocks
    from rnngen.models.cpu_single_step import stepper_for

    stepper = stepper_for(model.module, precision)
    inputs, targets, _ = evaluation_blocks(model.validation_ids()[0], rows)
    total, state = 0.0, None
    with torch.inference_mode():
        for start in range(0, inputs.shape[1], window):
            x = torch.from_numpy(inputs[:, start : start + window].astype("int64"))
            y = torch.from_numpy(targets[:, start : start + window].astype("int64"))
            scores, state = stepper(x, state)
            total += torch.nn.functional.cross_entropy(scores.flatten(0, 1), y.flatten(), reduction="sum").item()
    return total / inputs.size


def greedy_agreement(model, precision: str, length: int = GREEDY_TOKENS) -> int:
    """How many greedy tokens after the seed are the same as fp32's (length when all are)."""
    ids = [model.sample("The", length=length, temperature=0, precision=p)[0].ids for p in ("fp32", precision)]
    return next((i for i, (a, b) in enumerate(zip(*ids)) if a != b), length)


def one_sample_figures(model, precisions: list[str]) -> dict:
    """Per precision: bytes per token, bandwidth, bound and tokens/s (medians over ROUNDS, interleaved)."""
    from rnngen.models.cpu_single_step import stepper_for

    rounds: dict[str, list[tuple[float, float]]] = {p: [] for p in precisions}
    for precision in precisions:  # warm up: convert the weights, touch every code path once
        tokens_per_s(model, precision, 1, 20)
    for _ in range(ROUNDS):
        for precision in precisions:
            nbytes = stepper_for(model.module, precision).weight_bytes
            bound = 1 / read_seconds(nbytes, threads=1)  # one sample runs on one thread
            rounds[precision].append((bound, tokens_per_s(model, precision, 1, ONE_SAMPLE_TOKENS)))
    figures = {}
    for precision, pairs in rounds.items():
        nbytes = stepper_for(model.module, precision).weight_bytes
        bound = statistics.median(b for b, _ in pairs)
        figures[precision] = {
            "weight_bytes_per_token": nbytes,
            "read_GB_per_s_1_thread": round(bound * nbytes / 1e9, 1),
            "bound_tokens_per_s": round(bound),
            "tokens_per_s_1_sample": round(statistics.median(r for _, r in pairs)),
            "ratio_to_bound": round(statistics.median(r / b for b, r in pairs), 3),
        }
    return figures


def wall(command: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    import rnngen.api as rnngen
    from rnngen.models.precision import bf16_supported

    run = make_checkpoint(TRAIN_STEPS)
    model = rnngen.load(run)
    precisions = ["fp32", "bf16", "int8"] if bf16_supported() else ["fp32", "int8"]
    figures = one_sample_figures(model, precisions)
    for precision in precisions:
        rates = [tokens_per_s(model, precision, BATCH, BATCH_TOKENS) for _ in range(1 + ROUNDS // 3)]
        figures[precision]["tokens_per_s_32_samples"] = round(statistics.median(rates[1:]))  # the first warms up
        figures[precision]["validation_loss"] = round(validation_loss(model, precision), 4)
    fp32 = figures["fp32"]
    for precision in precisions[1:]:
        figures[precision]["speed_over_fp32_1_sample"] = round(figures[precision]["tokens_per_s_1_sample"] / fp32["tokens_per_s_1_sample"], 2)  # fmt: skip
        figures[precision]["speed_over_fp32_32_samples"] = round(figures[precision]["tokens_per_s_32_samples"] / fp32["tokens_per_s_32_samples"], 2)  # fmt: skip
        figures[precision]["loss_over_fp32"] = round(figures[precision]["validation_loss"] / fp32["validation_loss"] - 1, 5)  # fmt: skip
        figures[precision][f"greedy_tokens_as_fp32_of_{GREEDY_TOKENS}"] = greedy_agreement(model, precision)
    torch_import = wall([sys.executable, "-c", "import torch"])
    command = wall([sys.executable, "-m", "rnngen", "sample", "--run", str(run), "--length", "300", "--seed", "The"])
    report("sample_speed", {
        "model": f"char LSTM 2x512, trained {TRAIN_STEPS} steps (batch 16 x 64) on tiny Shakespeare",
        **figures,
        "import_torch_s": round(torch_import, 2),
        "sample_300_command_s": round(command, 2),
        "command_minus_import_s": round(command - torch_import, 2),
        "goal": "fp32 >= 0.5 of its bound (stretch 0.7); int8 >= 2x fp32 tokens/s, loss within 0.5% of fp32",
    })  # fmt: skip


if __name__ == "__main__":
    main()

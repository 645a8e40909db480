"""Sampling speed of a char-level 2x512 LSTM, and the wall time of a whole `rnngen sample` command.

Reports generated tokens/s for 1 sample and for 32 samples in one batch (through the Python
API, the same code the CLI runs), then the wall time of `rnngen sample --length 300` from
process start, next to `python -c "import torch"` on the same machine.
Goals (issue 4): >= 2,000 tokens/s for one sample on 2 CPU cores; the whole 300-token command
within 1.5 s of the bare torch import.
    python bench/sample_speed.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from common import SHAKESPEARE, report, run_cli, scratch


def make_checkpoint():
    work = scratch("sample_speed")
    data = SHAKESPEARE if SHAKESPEARE.exists() else None
    if data is None:
        data = work / "text.txt"
        data.write_text("the quick brown fox jumps over the lazy dog.\n" * 20000)
    sets = ["data.path=" + str(data), "model.num_layers=2", "model.hidden_size=512", "model.embedding_dim=64",
            "train.max_steps=2", "train.max_epochs=null", "train.batch_size=8", "train.seq_len=32",
            "train.eval_every=2", "train.sample_length=0", f"train.out_dir={work / 'run'}", "train.device=cpu"]  # fmt: skip
    run_cli("-q", "train", *[x for s in sets for x in ("--set", s)], "--overwrite")
    return work / "run"


def tokens_per_s(run, num_samples: int, length: int) -> float:
    import rnngen.api as rnngen

    model = rnngen.load(run)
    model.sample("The", length=20, num_samples=num_samples)  # warm up
    start = time.perf_counter()
    model.sample("The", length=length, num_samples=num_samples, temperature=0.8)
    return num_samples * length / (time.perf_counter() - start)


def wall(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    run = make_checkpoint()
    one = tokens_per_s(run, 1, 2000)
    batch = tokens_per_s(run, 32, 500)
    torch_import = wall([sys.executable, "-c", "import torch"])
    command = wall([sys.executable, "-m", "rnngen", "sample", "--run", str(run), "--length", "300", "--seed", "The"])
    report("sample_speed", {
        "model": "char LSTM 2x512",
        "tokens_per_s_1_sample": round(one),
        "tokens_per_s_32_samples": round(batch),
        "import_torch_s": round(torch_import, 2),
        "sample_300_command_s": round(command, 2),
        "command_minus_import_s": round(command - torch_import, 2),
        "goal": ">= 2000 tokens/s for 1 sample; command within 1.5 s of the torch import",
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""Training throughput of `rnngen train` next to a bare fused LSTM step of the same shape.

Char-level 2x512 LSTM, batch 64, seq_len 128, on tiny Shakespeare (or generated text when it is
absent). The rnngen figure comes from metrics.csv (tokens and elapsed time between the 10th step
and the last row), so it includes data feeding, logging, the progress machinery and a checkpoint
save, but not start-up or evaluation. The bare figure is embedding -> nn.LSTM -> linear ->
cross-entropy -> backward -> AdamW step on random ids, timed in this process.
Goal (issue 3): rnngen reaches at least 90% of the bare step.
    python bench/train_throughput.py [--steps 60]
"""

from __future__ import annotations

import argparse
import csv
import json
import time

import torch
from common import SHAKESPEARE, report, run_cli, scratch
from torch import nn

BATCH, SEQ, HIDDEN, LAYERS, EMBED = 64, 128, 512, 2, 64


def bare_tokens_per_s(vocab: int, steps: int) -> float:
    torch.manual_seed(0)
    embedding = nn.Embedding(vocab, EMBED)
    lstm = nn.LSTM(EMBED, HIDDEN, LAYERS, batch_first=True)
    head = nn.Linear(HIDDEN, vocab)
    params = [*embedding.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randint(0, vocab, (BATCH, SEQ))
    y = torch.randint(0, vocab, (BATCH, SEQ))

    def step():
        out, _ = lstm(embedding(x))
        loss = nn.functional.cross_entropy(head(out).reshape(-1, vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def rnngen_tokens_per_s(steps: int, extra: dict | None = None) -> tuple[float, int]:
    """tokens/s of `rnngen train` on the shape above; `extra` adds config keys (e.g. regularisers)."""
    work = scratch("train_throughput")
    data = SHAKESPEARE
    if not data.exists():
        data = work / "text.txt"
        data.write_text("".join(chr(97 + (i * 7919) % 26) + (" " if i % 6 == 0 else "") for i in range(1_200_000)))
    sets = {
        "data.path": str(data), "data.level": "char", "model.cell": "lstm", "model.num_layers": LAYERS,
        "model.hidden_size": HIDDEN, "model.embedding_dim": EMBED, "model.dropout": 0.0,
        "train.batch_size": BATCH, "train.seq_len": SEQ, "train.max_steps": steps, "train.max_epochs": "null",
        "train.eval_every": 100000, "train.save_every": steps // 2, "train.log_every": 10,
        "train.out_dir": str(work / "run"), "train.device": "cpu", **(extra or {}),
    }  # fmt: skip
    args = [item for key, value in sets.items() for item in ("--set", f"{key}={value}")]
    run_cli("train", *args, "--overwrite")
    with open(work / "run" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["train_loss"]]
    first, last = rows[0], rows[-1]
    tokens = int(last["tokens"]) - int(first["tokens"])
    seconds = float(last["elapsed_s"]) - float(first["elapsed_s"])
    vocab = json.loads((work / "run" / "prepared" / "meta.json").read_text())["counts"]["vocab_size"]
    return tokens / seconds, vocab


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    ours, vocab = rnngen_tokens_per_s(args.steps)
    bare = bare_tokens_per_s(vocab, 20)
    report("train_throughput", {
        "shape": f"char LSTM {LAYERS}x{HIDDEN}, batch {BATCH}, seq {SEQ}, {torch.get_num_threads()} threads",
        "rnngen_tokens_per_s": round(ours),
        "bare_tokens_per_s": round(bare),
        "ratio": round(ours / bare, 3),
        "goal": "ratio >= 0.90",
    })  # fmt: skip


if __name__ == "__main__":
    main()

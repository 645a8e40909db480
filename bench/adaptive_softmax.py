"""Full vs adaptive softmax output at word level: training speed, then quality at equal training time.

Speed: vocabulary 20,000, 2x512 LSTM, batch 64, seq 64, a synthetic Zipf-distributed token stream;
training steps (forward, loss, backward, clip, AdamW) of both models, interleaved so that load from
other processes hits both alike. Goal (issue 7): adaptive at least 2.5x the tokens/s of full.

Quality (--quality-minutes M, 0 skips it): train the same word-level model on tiny Shakespeare
for M minutes with model.output forced to full, then to adaptive, and compare validation bits
per character. Goal: adaptive no worse than full.

    python bench/adaptive_softmax.py                        # speed only, about 2-4 minutes on 2 cores
    python bench/adaptive_softmax.py --threads 1            # steadier on a machine other jobs load
    nice -n 10 python bench/adaptive_softmax.py --quality-minutes 5

On a loaded machine several threads mostly wait for each other in the LSTM's per-step kernels,
which hides the gain; one thread measures the work itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import yaml
from common import SHAKESPEARE, report, run_cli, scratch

from rnngen.config import resolve
from rnngen.models.recurrent import model_args
from rnngen.models.registry import build_model
from rnngen.models.state import detach_state

VOCAB = 20_000


def zipf_stream(tokens: int, seed: int = 0) -> torch.Tensor:
    """Token ids with p(id) proportional to 1/(id+1): frequency-sorted, as rnngen's vocabulary is."""
    weights = 1.0 / np.arange(1, VOCAB + 1)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.choice(VOCAB, size=tokens, p=weights / weights.sum()))


class Stepper:
    """One model and optimizer doing Trainer-like steps over consecutive (B, T) windows."""

    def __init__(self, output: str, args):
        torch.manual_seed(0)
        config = resolve(None, [f"model.output={output}", "model.embedding_dim=512", "model.hidden_size=512"])
        self.args = model_args(config.model, VOCAB)
        self.model = build_model(self.args).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.ids = zipf_stream(args.batch * (args.seq * (args.warmup + args.rounds * args.steps) + 1))
        self.columns = self.ids.view(args.batch, -1)  # (B, N/B): parallel streams, as in training
        self.seq, self.window, self.state = args.seq, 0, None
        self.times: list[float] = []

    def step(self, timed: bool = True) -> None:
        start = time.perf_counter()
        columns = slice(self.window * self.seq, (self.window + 1) * self.seq + 1)
        x, y = self.columns[:, columns][:, :-1], self.columns[:, columns][:, 1:]  # (B, T)
        loss, state = self.model.loss(x, y, self.state)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.state = detach_state(state)
        self.window += 1
        if timed:
            self.times.append(time.perf_counter() - start)


def speed(args) -> dict:
    steppers = {name: Stepper(name, args) for name in ("full", "adaptive")}
    for stepper in steppers.values():
        for _ in range(args.warmup):
            stepper.step(timed=False)
    for _ in range(args.rounds):
        for stepper in steppers.values():
            for _ in range(args.steps):
                stepper.step()
    tokens = args.batch * args.seq
    rate = {name: tokens / statistics.median(s.times) for name, s in steppers.items()}
    return {
        "setup": f"vocab {VOCAB:,}, lstm 2x512, batch {args.batch}, seq {args.seq}, {torch.get_num_threads()} threads",
        "adaptive_cutoffs": steppers["adaptive"].args["cutoffs"],
        "full_tokens_per_s": round(rate["full"]),
        "adaptive_tokens_per_s": round(rate["adaptive"]),
        "speedup": round(rate["adaptive"] / rate["full"], 2),
        "step_seconds_full": [round(t, 2) for t in steppers["full"].times],
        "step_seconds_adaptive": [round(t, 2) for t in steppers["adaptive"].times],
        "speed_goal": "adaptive >= 2.5x full",
    }


def quality(args) -> dict:
    """Train full and adaptive for the same wall time on tiny Shakespeare words; validation bpc of each."""
    work = scratch("adaptive_softmax")
    figures = {}
    for output in ("full", "adaptive"):
        config = {
            "data": {"path": str(SHAKESPEARE), "level": "word", "prepared_dir": str(work / "prepared")},
            "model": {
                "cell": "lstm", "embedding_dim": args.quality_hidden, "hidden_size": args.quality_hidden,
                "num_layers": 2, "dropout": 0.1, "output": output,
            },
            "train": {
                "out_dir": str(work / output), "batch_size": 32, "seq_len": 64, "lr": 0.003, "max_epochs": None,
                "max_minutes": args.quality_minutes, "eval_every": 100, "save_every": 100_000, "log_every": 50,
                "sample_length": 0, "device": "cpu", "recipe": "none",
            },
        }  # fmt: skip
        path = work / f"{output}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        run_cli("-q", "train", "--config", str(path), "--overwrite")
        _, _, proc = run_cli("info", str(work / output / "last.pt"), "--json")
        info = json.loads(proc.stdout)
        figures[f"{output}_val_bpc"] = round(info["val_bpc"], 4)
        figures[f"{output}_steps"] = info["step"]
        figures["vocab_size"] = info["vocab_size"]
    figures["quality_setup"] = (
        f"tiny Shakespeare, word level, lstm 2x{args.quality_hidden}, batch 32, seq 64, {args.quality_minutes:g} min each"
    )
    figures["quality_goal"] = "adaptive val bpc <= full"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model")
    parser.add_argument("--rounds", type=int, default=3, help="alternations between the two models")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quality-minutes", type=float, default=0)
    parser.add_argument("--quality-hidden", type=int, default=256)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report("adaptive_softmax_speed", speed(args))
    if args.quality_minutes > 0:
        report("adaptive_softmax_quality", quality(args))


if __name__ == "__main__":
    main()

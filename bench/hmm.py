"""The Hidden Markov Model as its states grow, next to the LSTM and the 5-gram on the same words, and next to hmmlearn.

Tiny Shakespeare at word level (WORD_DATA of bench/word_level.py: words seen once are <unk>, the
first 90% of the tokens for training, the last 10% held out), one prepared vocabulary for every
arm, each trained for the same wall time, one after the other:

  hmm-K, K = 32, 128, 512, 2048: model.cell hmm with HMM_TRAIN (AdamW on the exact likelihood);
  lstm: configs/hunger.yaml as shipped, its network alone (model.cache_size 0: an HMM has no cache
        pointer to add, and the cache is a scoring add-on of the network, not part of it);
  ngram-5: the count-based 5-gram (seconds).

Reported per arm: best held-out bits per character (as training measures it), seconds per epoch
(training time per pass over the training text, from metrics.csv; evaluation and saving excluded),
epochs done and the cost per token in multiply-adds (K^2 + K for an HMM).

hmmlearn: its CategoricalHMM (Baum-Welch EM in compiled loops) with K = 128 on the same token ids,
one EM pass after another for the same wall time, with its faster `scaling` implementation (its
default `log` one is timed on a tenth of the text); seconds per pass and the best held-out
perplexity, next to rnngen's hmm-128 scored the same way (the held-out text as one sequence from
the start, its words never seen in training read as <unk> by both). Goal (issue 29): rnngen at least 20x faster per pass, and no worse perplexity.
hmmlearn is not a dependency of rnngen: `pip install hmmlearn` (the arm is skipped without it).

    flock /tmp/rnngen-bench.lock python bench/hmm.py                  # about 35 minutes on 2 cores
    python bench/hmm.py --minutes 0.2 --states 16,32 --hmmlearn-states 16  # a smoke run, about 3 minutes
"""

from __future__ import annotations

import argparse
import csv
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import SHAKESPEARE, report, run_cli, scratch
from word_level import CONFIGS, WORD_DATA, _config

from rnngen import api
from rnngen.data.prepare import prepare
from rnngen.data.vocab import UNK_ID

# The HMM's recipe: a high Adam rate, since each logit must travel far from its random start (a state's
# emission falls from 1/V to nearly 0 for most words), and wide batches, since a (B, K) x (K, K) step
# keeps the CPU busy only for large B.
HMM_TRAIN = {"optimizer": "adamw", "lr": 0.1, "weight_decay": 0.0, "warmup_steps": 10, "batch_size": 128,
             "seq_len": 64, "sample_length": 50}  # fmt: skip
EVALUATIONS = 10  # per arm: eval_every is set from the expected steps of each size
CPU_FLOPS = 4e10  # what 2 cores sustain on these matmuls, roughly: only to space the evaluations


def _steps_per_minute(states: int) -> float:
    """About how many HMM_TRAIN steps a minute holds: ~30 ms of overhead plus 3 (B, K) x (K, K) matmuls per token."""
    tokens = HMM_TRAIN["batch_size"] * HMM_TRAIN["seq_len"]
    return 60 / (0.03 + tokens * 6 * states**2 / CPU_FLOPS)


def _arm(config: Path) -> dict:
    """Train one arm; its best held-out figures, speed and cost from metrics.csv and best.pt."""
    run_cli("train", "--config", str(config), "--overwrite")
    run_dir = Path(_read_yaml(config)["train"]["out_dir"])
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r["val_loss"]]
    best = min(scored, key=lambda r: float(r["val_loss"]))
    speeds = [float(r["tokens_per_s"]) for r in rows if r["tokens_per_s"] and float(r["tokens_per_s"]) > 0]
    model = api.load(run_dir / "best.pt")
    train_tokens = model.summary["prepared"]["train_tokens"]
    epochs = float(rows[-1]["epoch"])
    training_s = train_tokens / (sum(speeds) / len(speeds)) if speeds else float(rows[-1]["elapsed_s"])
    return {
        "best_val_bpc": round(float(best["val_bpc"]), 4),
        "best_val_ppl": round(float(best["val_ppl"]), 1),
        "s_per_epoch": round(training_s, 2),
        "epochs": round(epochs, 2),
        "best_at_epoch": float(best["epoch"]),
        "cost_per_token": model.module.cost_per_token(),
        "parameters": sum(p.numel() for p in model.module.parameters()),
        "vocab_size": len(model.vocab),
        "run": str(run_dir),
    }


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def rnngen_arms(states: list[int], minutes: float, work: Path) -> dict:
    data = {**WORD_DATA, "prepared_dir": str(work / "prepared")}  # one vocabulary for every arm
    results = {}
    for k in states:
        every = max(1, round(_steps_per_minute(k) * minutes / EVALUATIONS))
        train = {**HMM_TRAIN, "eval_every": every, "save_every": every, "log_every": max(1, every // 2)}
        overrides = {"data": data, "model": {"cell": "hmm", "hmm_states": k}, "train": train}
        results[f"hmm-{k}"] = _arm(_config(None, overrides, work, f"hmm-{k}", minutes))
        print(f"hmm-{k}: {results[f'hmm-{k}']}", flush=True)
    lstm = {"data": data, "model": {"cache_size": 0}, "train": {}}
    results["lstm (hunger.yaml, network alone)"] = _arm(_config(CONFIGS / "hunger.yaml", lstm, work, "lstm", minutes))
    ngram = {"data": data, "model": {"cell": "ngram", "order": 5}, "train": {}}
    results["ngram-5"] = _arm(_config(None, ngram, work, "ngram-5", minutes))
    return results


# --------------------------------------------------------------------------- hmmlearn


def _held_out_perplexity(log_likelihood: float, tokens: int) -> float:
    return math.exp(-log_likelihood / tokens)


def hmmlearn_arm(states: int, minutes: float, ours: dict) -> dict:
    """hmmlearn's Baum-Welch next to rnngen's hmm-K arm `ours`, on the same ids and the same wall time."""
    try:
        from hmmlearn.hmm import CategoricalHMM
    except ImportError:
        return {
            "skipped": "hmmlearn is not installed; `pip install hmmlearn` (for this benchmark only) to run this arm"
        }
    model = api.load(Path(ours["run"]) / "best.pt")
    prepared = prepare(model.config)
    train, val = prepared.ids("train").astype("int64")[:, None], prepared.ids("val").astype("int64")
    # EM gives a word it never saw in training probability 0 (some held-out words occur twice in the held-out
    # text only), which would make its perplexity infinite: both models read those words as <unk>
    seen = np.zeros(len(prepared.vocab), dtype=bool)
    seen[train[:, 0]] = True
    val = np.where(seen[val], val, UNK_ID)
    ours_ppl = _held_out_perplexity(float(model.module.log_likelihood(torch.from_numpy(val)[None])[0]), len(val))
    warnings.filterwarnings("ignore")  # hmmlearn warns of a degenerate solution (more parameters than tokens)
    log_pass = _log_implementation_pass(CategoricalHMM, states, len(prepared.vocab), train)
    hmm = CategoricalHMM(n_components=states, n_features=len(prepared.vocab), n_iter=1, init_params="ste",
                         params="ste", implementation="scaling", random_state=0)  # fmt: skip
    passes, fit_s = [], 0.0
    while fit_s < minutes * 60:
        started = time.perf_counter()
        hmm.fit(train)
        fit_s += time.perf_counter() - started
        hmm.init_params = ""  # the next fit continues from these parameters: one more EM pass
        try:
            passes.append(_held_out_perplexity(hmm.score(val[:, None]), len(val)))
        except ValueError:  # a held-out word no state can emit: the scaled forward underflows
            passes.append(math.inf)
    return {
        "states": states,
        "hmmlearn_passes": len(passes),
        "hmmlearn_s_per_pass": round(fit_s / len(passes), 2),
        "hmmlearn_log_implementation_s_per_pass": log_pass,
        "hmmlearn_best_val_ppl": round(min(passes), 1),
        "hmmlearn_val_ppl_by_pass": [round(p, 1) for p in passes],
        "rnngen_s_per_pass": ours["s_per_epoch"],
        "rnngen_best_val_ppl": round(ours_ppl, 1),
        "speedup_per_pass": round(fit_s / len(passes) / ours["s_per_epoch"], 1),
        "goal": "speedup >= 20 and rnngen_best_val_ppl <= hmmlearn_best_val_ppl",
    }


def _log_implementation_pass(model_class, states: int, vocab_size: int, train) -> float:
    """Seconds per pass of hmmlearn's default log-space implementation, timed on a tenth of the text."""
    tenth = train[: len(train) // 10]
    hmm = model_class(n_components=states, n_features=vocab_size, n_iter=1, random_state=0, implementation="log")
    started = time.perf_counter()
    hmm.fit(tenth)
    return round((time.perf_counter() - started) * len(train) / len(tenth), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes per arm")
    parser.add_argument("--states", default="32,128,512,2048", help="HMM sizes K to train")
    parser.add_argument("--hmmlearn-states", type=int, default=128, help="K of the hmmlearn comparison (0 = skip)")
    args = parser.parse_args()
    if not SHAKESPEARE.exists():
        raise SystemExit(f"{SHAKESPEARE} is missing: this benchmark needs tiny Shakespeare")
    work = scratch("hmm")
    states = [int(k) for k in args.states.split(",")]
    if args.hmmlearn_states and args.hmmlearn_states not in states:
        states.append(args.hmmlearn_states)
    results = rnngen_arms(states, args.minutes, work)
    if args.hmmlearn_states:
        k = args.hmmlearn_states
        results["hmmlearn"] = hmmlearn_arm(k, args.minutes, results[f"hmm-{k}"])
    report(f"hmm_{args.minutes:g}min", results)


if __name__ == "__main__":
    main()

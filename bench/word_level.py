"""Word-level quality on a novel-sized text: rnngen's configs next to PyTorch's word_language_model recipe.

Tiny Shakespeare (about 290k word tokens) at word level, the last 10% of the tokens for
validation; every arm trains for the same wall time on the same machine, one after the other:

  (a) replica of PyTorch's word_language_model defaults inside rnngen: LSTM 2x200, embedding
      200, SGD lr 20 (no momentum, no weight decay), clip 0.25, dropout 0.2, BPTT 35, batch 20,
      lr / 4 when the validation loss stops improving (evaluated once per epoch);
  (b) configs/hunger.yaml as it was before issue 14 (2x512 tied, dropout 0.3, AdamW);
  (c) configs/hunger.yaml, the shipped word config (up to about 20 minutes);
  (d) configs/novel_subword.yaml (byte-level BPE, 4,000 tokens);
  (e) configs/hunger_long.yaml, the long-run word config;
  (q) no config at all: the README's Quickstart (`--set data.path=... --set data.level=word
      --set train.max_minutes=M`), so the recipe for the level and budget decides.
The word arms share one vocabulary (words seen once are <unk>), so only the recipe differs.
Reported for every arm: the best validation bits per character of the network alone (the
weights samples are drawn from, without the cache pointer) and with the cache, each closed and
open vocabulary (every <unk> also pays for its spelling), the epoch of the best point, the
final point, tokens/s and a 300-token sample from "KING".
Goals (issue 28), network alone against (a) at the same budget: (c) and (e) at least 6% fewer
bits; the no-config arm (q) within 1% of (c) at 20 minutes.

--part char: configs/shakespeare_char.yaml next to a replica of word_language_model's recipe at
character level (LSTM 2x200); goal at 20 minutes: 8% lower best validation loss.
--part throughput: tokens/s of the char 2x512 benchmark (bench/train_throughput.py) with
model.weight_drop 0.5 on and off; goal: within 10%.

    python bench/word_level.py --part word --arms a,c,d,e --minutes 5      # one budget per run
    python bench/word_level.py --part word --arms a,c,d,e,q --minutes 20
    python bench/word_level.py --part word --arms a,c,d,e --minutes 60
    python bench/word_level.py --part char --minutes 20
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml
from common import SHAKESPEARE, report, run_cli, scratch
from train_throughput import rnngen_tokens_per_s

from rnngen import api

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WORD_DATA = {"level": "word", "min_freq": 2, "val_fraction": 0.1}
REPLICA = {  # PyTorch examples/word_language_model, main.py defaults
    "model": {"cell": "lstm", "embedding_dim": 200, "hidden_size": 200, "num_layers": 2, "dropout": 0.2,
              "tie_weights": False, "output": "full"},
    "train": {"optimizer": "sgd", "lr": 20.0, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.25,
              "seq_len": 35, "batch_size": 20, "eval_batch_size": 10, "lr_schedule": "plateau",
              "plateau_factor": 0.25, "warmup_steps": 0, "recipe": "none"},
}  # fmt: skip
OLD_HUNGER = {  # configs/hunger.yaml before issue 14
    "model": {"cell": "lstm", "embedding_dim": 512, "hidden_size": 512, "num_layers": 2, "dropout": 0.3,
              "tie_weights": True, "output": "full"},  # auto chose full below 10,000 words then
    "train": {"batch_size": 32, "seq_len": 64, "lr": 0.002, "eval_every": 250, "save_every": 250, "recipe": "none"},
}  # fmt: skip


def _config(base: Path | None, overrides: dict, work: Path, name: str, minutes: float) -> Path:
    """A config file for one arm: a ready config (or the defaults) with overrides, a time limit and its own run dir."""
    config = yaml.safe_load(base.read_text()) if base else {}
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    config.setdefault("data", {})["path"] = str(SHAKESPEARE)
    config["train"].update(
        {"out_dir": str(work / name), "max_minutes": minutes, "max_epochs": None, "patience": None, "device": "cpu"}
    )
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _quickstart(work: Path, minutes: float) -> tuple[list[str], Path]:
    """The README's Quickstart without a config file (the benchmark's validation split, and the CPU)."""
    run_dir = work / "arm_q"
    sets = {"data.path": SHAKESPEARE, "data.level": "word", "train.out_dir": run_dir, "train.max_minutes": minutes,
            "data.val_fraction": WORD_DATA["val_fraction"], "train.device": "cpu"}  # fmt: skip
    return [part for key, value in sets.items() for part in ("--set", f"{key}={value}")], run_dir


def _scores(model, use_cache: bool) -> dict:
    """Closed and open-vocabulary bpc of a loaded checkpoint on its validation split, folded as in training."""
    scores = model.evaluate(None, model.config.train.eval_batch_size, use_cache=use_cache)
    return {"bpc": round(scores.bpc, 4), "bpc_open": round(scores.bpc_open, 4)}


def _measure(train_args: list[str], run_dir: Path, seed: str) -> dict:
    run_cli("train", *train_args, "--overwrite")
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r["val_loss"]]
    best = min(scored, key=lambda r: float(r["val_loss"]))
    speeds = [float(r["tokens_per_s"]) for r in rows if r["tokens_per_s"]]
    model, last = api.load(run_dir / "best.pt"), api.load(run_dir / "last.pt")
    (sample,) = model.sample(seed, length=300, random_seed=0, temperature=0.8, on_unknown="skip")
    cache = bool(model.model_args.get("pointer"))
    return {
        "network_alone": _scores(model, use_cache=False),  # what samples are drawn from
        "with_cache": _scores(model, use_cache=True) if cache else None,
        "best_at_epoch": float(best["epoch"]),
        "final": {
            "epoch": float(rows[-1]["epoch"]),
            "network_alone": _scores(last, use_cache=False),
            "with_cache": _scores(last, use_cache=True) if cache else None,
        },  # fmt: skip
        "tokens_per_s": round(sum(speeds) / len(speeds)) if speeds else None,
        "vocab_size": len(model.vocab),
        "recipe": model.config.train.recipe,
        "sample": seed + sample.text,
    }


def word_arms(minutes: float, arms: str) -> dict:
    work = scratch("word_level")
    specs = {
        "a": ("word_language_model replica", None, {"data": WORD_DATA, **REPLICA}),
        "b": ("hunger.yaml before issue 14", None, {"data": WORD_DATA, **OLD_HUNGER}),
        "c": ("hunger.yaml", CONFIGS / "hunger.yaml", {"data": WORD_DATA}),
        "d": ("novel_subword.yaml", CONFIGS / "novel_subword.yaml", {"data": {"val_fraction": 0.1}}),
        "e": ("hunger_long.yaml", CONFIGS / "hunger_long.yaml", {"data": WORD_DATA}),
    }
    epoch_windows = 262_000 // (20 * 35)  # (a) evaluates once per epoch, as the example does
    specs["a"][2]["train"] = {**REPLICA["train"], "eval_every": epoch_windows, "save_every": epoch_windows}
    results = {}
    for key in arms.split(","):
        if key == "q":
            name, (args, run_dir) = "no config (the Quickstart)", _quickstart(work, minutes)
        else:
            name, base, overrides = specs[key]
            config = _config(base, overrides, work, f"arm_{key}", minutes)
            args, run_dir = ["--config", str(config)], work / f"arm_{key}"
        results[f"({key}) {name}"] = _measure(args, run_dir, "KING")
        print(json.dumps({key: results[f"({key}) {name}"]}, indent=1), flush=True)
    results["goals"] = _goals({k[1]: v for k, v in results.items()})
    return results


def _goals(arms: dict) -> dict:
    """Each arm's network alone against (a), closed and open vocabulary; (q) against (c)."""
    alone = {key: arm["network_alone"] for key, arm in arms.items()}
    goals = {}
    for key in [k for k in "bcde" if k in alone and "a" in alone]:
        goals[f"{key}_vs_a"] = {v: f"{alone[key][v] / alone['a'][v] - 1:+.1%}" for v in ("bpc", "bpc_open")}
    if "q" in alone and "c" in alone:
        goals["q_vs_c"] = {v: f"{alone['q'][v] / alone['c'][v] - 1:+.1%}" for v in ("bpc", "bpc_open")}
    goals["goal"] = "c and e <= -6% against a (network alone); q within 1% of c"
    return goals


def char_arms(minutes: float) -> dict:
    work = scratch("word_level")
    char_data = {"data": {"level": "char", "val_fraction": 0.1}}
    replica = {**char_data, "model": {**REPLICA["model"]}, "train": {**REPLICA["train"]}}
    windows = 1_000_000 // (20 * 35)
    replica["train"].update({"eval_every": windows, "save_every": windows})
    arms = {
        "word_language_model char replica (LSTM 2x200)": _config(None, replica, work, "char_replica", minutes),
        "configs/shakespeare_char.yaml": _config(
            CONFIGS / "shakespeare_char.yaml", char_data, work, "char_ours", minutes
        ),
    }
    results = {name: _measure(["--config", str(path)], work / path.stem, "KING") for name, path in arms.items()}
    replica_bpc, ours = (arm["network_alone"]["bpc"] for arm in results.values())  # bpc is loss / a constant here
    results["network_alone_change"] = f"{ours / replica_bpc - 1:+.1%} (goal <= -8% at 20 minutes)"
    return results


def throughput(steps: int) -> dict:
    off, _ = rnngen_tokens_per_s(steps)
    on, _ = rnngen_tokens_per_s(steps, {"model.weight_drop": 0.5})
    return {
        "weight_drop_off_tokens_per_s": round(off),
        "weight_drop_0.5_tokens_per_s": round(on),
        "ratio": round(on / off, 3),
        "goal": "ratio >= 0.90",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes per arm")
    parser.add_argument("--part", default="word,char,throughput", help="any of word, char, throughput")
    parser.add_argument("--arms", default="a,c,d,e", help="word arms to run (a, b, c, d, e, q)")
    parser.add_argument("--steps", type=int, default=40, help="throughput: steps per run")
    args = parser.parse_args()
    if not SHAKESPEARE.exists():
        raise SystemExit(f"{SHAKESPEARE} is missing: this benchmark needs tiny Shakespeare")
    parts = args.part.split(",")
    if "word" in parts:
        report(f"word_level_{args.minutes:g}min", word_arms(args.minutes, args.arms))
    if "char" in parts:
        report(f"word_level_char_{args.minutes:g}min", char_arms(args.minutes))
    if "throughput" in parts:
        report("word_level_throughput", throughput(args.steps))


if __name__ == "__main__":
    main()

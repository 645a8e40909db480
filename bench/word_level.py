"""Word-level quality on a novel-sized text: rnngen's configs next to PyTorch's word_language_model recipe.

Tiny Shakespeare (about 290k word tokens) at word level, the last 10% of the tokens for
validation; every arm trains for the same wall time on the same machine, one after the other:

  (a) replica of PyTorch's word_language_model defaults inside rnngen: LSTM 2x200, embedding
      200, SGD lr 20 (no momentum, no weight decay), clip 0.25, dropout 0.2, BPTT 35, batch 20,
      lr / 4 when the validation loss stops improving (evaluated once per epoch);
  (b) configs/hunger.yaml as it was before issue 14 (2x512 tied, dropout 0.3, AdamW);
  (c) configs/hunger.yaml now (the AWD-LSTM regularisers, word vectors shared by spelling and a
      cache pointer; its network alone is reported too);
  (d) configs/novel_subword.yaml (byte-level BPE, 4,000 tokens).
The word arms share one vocabulary (words seen once are <unk>), so only the recipe differs.
Reported: best validation bits per character (total bits / characters of the original text
predicted, so word and subword compare), epochs, tokens/s and a 300-token sample from "KING".
Goal (issue 14): (c) at least 5% fewer bpc than (a) (stretch 8%); (c) or (d) better than (b).

--part char: configs/shakespeare_char.yaml (light regularisers, a cache pointer) next to a replica of
word_language_model's recipe at character level (LSTM 2x200); goal: 5% lower best val loss.
--part throughput: tokens/s of the char 2x512 benchmark (bench/train_throughput.py) with
model.weight_drop 0.5 on and off; goal: within 10%.

    flock /tmp/rnngen-bench.lock python bench/word_level.py                 # about 32 minutes
    python bench/word_level.py --minutes 20 --part word --arms a,c          # the 20-minute check
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


def _measure(config: Path, seed: str) -> dict:
    run_cli("train", "--config", str(config), "--overwrite")
    run_dir = Path(yaml.safe_load(config.read_text())["train"]["out_dir"])
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = [r for r in rows if r["val_loss"]]
    best = min(scored, key=lambda r: float(r["val_loss"]))
    speeds = [float(r["tokens_per_s"]) for r in rows if r["tokens_per_s"]]
    model = api.load(run_dir / "best.pt")
    (sample,) = model.sample(seed, length=300, random_seed=0, temperature=0.8, on_unknown="skip")
    network_only = {}
    if model.model_args.get("pointer"):  # what the network alone scores, scored as in training
        eval_rows = model.config.train.eval_batch_size
        alone = model.evaluate(None, eval_rows, use_cache=False)
        network_only = {
            "best_val_bpc_without_cache": round(alone.bpc, 4),
            "best_val_loss_without_cache": round(alone.loss, 4),
        }
    return {
        "best_val_bpc": round(float(best["val_bpc"]), 4),
        **network_only,
        "best_val_loss": round(float(best["val_loss"]), 4),
        "best_at_epoch": float(best["epoch"]),
        "epochs": float(rows[-1]["epoch"]),
        "tokens_per_s": round(sum(speeds) / len(speeds)) if speeds else None,
        "vocab_size": len(model.vocab),
        "sample": seed + sample.text,
    }


def word_arms(minutes: float, arms: str) -> dict:
    work = scratch("word_level")
    specs = {
        "a": ("word_language_model replica", None, {"data": WORD_DATA, **REPLICA}),
        "b": ("hunger.yaml before issue 14", None, {"data": WORD_DATA, **OLD_HUNGER}),
        "c": ("hunger.yaml (regularised)", CONFIGS / "hunger.yaml", {"data": WORD_DATA}),
        "d": ("novel_subword.yaml", CONFIGS / "novel_subword.yaml", {"data": {"val_fraction": 0.1}}),
    }
    epoch_windows = 262_000 // (20 * 35)  # (a) evaluates once per epoch, as the example does
    specs["a"][2]["train"] = {**REPLICA["train"], "eval_every": epoch_windows, "save_every": epoch_windows}
    results = {}
    for key in arms.split(","):
        name, base, overrides = specs[key]
        results[f"({key}) {name}"] = _measure(_config(base, overrides, work, f"arm_{key}", minutes), "KING")
        print(json.dumps({key: results[f"({key}) {name}"]}, indent=1), flush=True)
    bpc = {k[1]: v["best_val_bpc"] for k, v in results.items()}
    if "a" in bpc and "c" in bpc:
        results["c_vs_a_bpc_change"] = f"{bpc['c'] / bpc['a'] - 1:+.1%} (goal <= -5%, stretch -8%)"
    if "b" in bpc and ("c" in bpc or "d" in bpc):
        best = min(bpc.get("c", 99), bpc.get("d", 99))
        results["best_of_c_d_vs_b_bpc_change"] = f"{best / bpc['b'] - 1:+.1%} (goal < 0)"
    return results


def char_arms(minutes: float) -> dict:
    work = scratch("word_level")
    char_data = {"data": {"level": "char", "val_fraction": 0.1}}
    replica = {**char_data, "model": {**REPLICA["model"]}, "train": {**REPLICA["train"]}}
    windows = 1_000_000 // (20 * 35)
    replica["train"].update({"eval_every": windows, "save_every": windows})
    results = {
        "word_language_model char replica (LSTM 2x200)": _measure(
            _config(None, replica, work, "char_replica", minutes), "KING"
        ),
        "configs/shakespeare_char.yaml": _measure(
            _config(CONFIGS / "shakespeare_char.yaml", char_data, work, "char_ours", minutes), "KING"
        ),
    }
    losses = [v["best_val_loss"] for v in results.values()]
    results["loss_change"] = f"{losses[1] / losses[0] - 1:+.1%} (goal <= -5%)"
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
    parser.add_argument("--arms", default="a,b,c,d", help="word arms to run")
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

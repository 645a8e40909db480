"""Pre-train once, fine-tune on a small corpus: against training on the small corpus alone (issue 15).

On tiny Shakespeare, at word level and then at character level:

  1. pre-train for --pretrain-minutes on the first 90% of the text;
  2. fine-tune that model (`rnngen train --init-from`, the fine-tuning defaults for lr and warmup) for
     --minutes on a --slice-kb slice taken from the start of the last 10%;
  3. train the same architecture from scratch for the same --minutes on the same slice.

Both runs of the slice hold out its last 10% as validation text (data.val_fraction 0.1), so both
are scored on the same characters; the table gives validation bits per character of best.pt,
measured in one exact pass (`rnngen evaluate`, batch size 1). The pre-trained model before any
fine-tuning is scored on that text too (the word model reads the slice's new words as <unk>).

    flock /tmp/rnngen-bench.lock python bench/finetune.py       # about 11 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml
from common import SHAKESPEARE, report, run_cli, scratch

from rnngen import api
from rnngen.data import tokens

ARCHITECTURE = {  # per level: the model and the from-scratch training settings (configs/shakespeare_char.yaml's)
    "char": {
        "model": {"cell": "lstm", "embedding_dim": 64, "hidden_size": 512, "num_layers": 1, "dropout": 0.0},
        "train": {"batch_size": 32, "seq_len": 100, "lr": 0.004, "warmup_steps": 30},
    },
    "word": {
        "model": {"cell": "lstm", "embedding_dim": 256, "hidden_size": 512, "num_layers": 1, "dropout": 0.2},
        "train": {"batch_size": 32, "seq_len": 50, "lr": 0.004, "warmup_steps": 30},
    },
}


def split_texts(out: Path, slice_kb: int) -> tuple[Path, Path]:
    """The first 90% of tiny Shakespeare, and a slice from the start of the last 10% (cut at line ends)."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    cut = text.rindex("\n", 0, int(len(text) * 0.9)) + 1
    end = text.rindex("\n", cut, cut + slice_kb * 1000) + 1
    big, small = out / "first90.txt", out / "slice.txt"
    big.write_text(text[:cut], encoding="utf-8")
    small.write_text(text[cut:end], encoding="utf-8")
    return big, small


def write_config(path: Path, data: Path, level: str, out_dir: Path, minutes: float, kind: str) -> Path:
    """A config for one run; a fine-tuning config leaves lr and warmup to the fine-tuning defaults.

    Evaluation time counts against max_minutes, so pre-training holds out little and evaluates rarely.
    """
    settings = ARCHITECTURE[level]
    pretrain = kind == "pretrain"
    train = {"out_dir": str(out_dir), "max_epochs": None, "max_minutes": minutes, "eval_every": 200 if pretrain else 25,
             "save_every": 200, "sample_length": 0, "device": "cpu", "recipe": "none", **settings["train"]}  # fmt: skip
    if kind == "finetune":
        train = {k: v for k, v in train.items() if k not in ("lr", "warmup_steps")}
    data_settings = {"path": str(data), "level": level, "val_fraction": 0.02 if pretrain else 0.1}
    config = {"data": data_settings, "model": settings["model"], "train": train}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def val_bpc(run: Path, data: Path | None = None) -> dict:
    """Exact bits per character of best.pt on its own validation split (or on `data`), via `rnngen evaluate`."""
    args = ["evaluate", "--checkpoint", str(run), "--json"] + (["--data", str(data)] if data else [])
    _, _, proc = run_cli(*args)
    row = json.loads(proc.stdout)
    return {"bpc": round(row["bpc"], 4), "unk_tokens": row["unk_tokens"], "tokens": row["tokens"]}


def one_level(level: str, out: Path, big: Path, small: Path, args) -> dict:
    runs = {name: out / level / name for name in ("pretrain", "finetune", "scratch")}
    minutes = {"pretrain": args.pretrain_minutes, "finetune": args.minutes, "scratch": args.minutes}
    texts = {"pretrain": big, "finetune": small, "scratch": small}
    configs = {
        name: write_config(out / f"{level}-{name}.yaml", texts[name], level, runs[name], minutes[name], name)
        for name in runs
    }
    walls = {}
    for name, config in configs.items():
        extra = ["--init-from", str(runs["pretrain"])] if name == "finetune" else []
        walls[name], _, proc = run_cli("train", "--config", str(config), "--overwrite", *extra)
        if name == "finetune":
            print("\n".join(line for line in proc.stderr.splitlines() if "fine-tuning from" in line or "kept:" in line))
    held_out = out / level / "held_out.txt"  # the slice's validation text, as the fine-tuned run cut it
    model = api.load(runs["finetune"])
    ids, _, _ = model.validation_ids()
    held_out.write_text(tokens.join(model.vocab.decode(ids), level), encoding="utf-8")
    figures = {
        "fine_tuned_bpc": val_bpc(runs["finetune"])["bpc"],
        "scratch_bpc": val_bpc(runs["scratch"])["bpc"],
        "pretrained_only": val_bpc(runs["pretrain"], held_out),
        "steps": {name: api.load(run / "last.pt").summary["step"] for name, run in runs.items()},
        "best_step": {name: api.load(run).summary["step"] for name, run in runs.items()},
        "vocab": {name: len(api.load(run).vocab) for name, run in runs.items()},
        "command_wall_s": {name: round(wall, 1) for name, wall in walls.items()},
    }
    figures["scratch_over_fine_tuned"] = round(figures["scratch_bpc"] / figures["fine_tuned_bpc"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-minutes", type=float, default=3.0)
    parser.add_argument("--minutes", type=float, default=1.0, help="fine-tuning and from-scratch training time")
    parser.add_argument("--slice-kb", type=int, default=30)
    parser.add_argument("--levels", default="word,char")
    args = parser.parse_args()
    if not SHAKESPEARE.exists():
        raise SystemExit(f"{SHAKESPEARE} is missing: this benchmark needs tiny Shakespeare")
    out = scratch("finetune")
    big, small = split_texts(out, args.slice_kb)
    figures = {"pretrain_minutes": args.pretrain_minutes, "minutes": args.minutes, "slice_bytes": small.stat().st_size}
    for level in args.levels.split(","):
        figures[level] = one_level(level, out, big, small, args)
        figures[level]["load_average_after"] = round(os.getloadavg()[0], 1)  # other work on the machine skews times
    report("finetune", figures)


if __name__ == "__main__":
    main()

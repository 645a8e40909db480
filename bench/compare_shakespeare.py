"""The Markov baseline's cost as its order grows, on tiny Shakespeare at character level.

For every order 1..8: `rnngen train` with model.cell ngram in a fresh process; reports the
counting time, stored n-grams, model memory, the peak RSS of the largest train process so far
(orders run from small to large), the whole command's wall time, validation bits per character,
evaluation time of the validation split (one pass, as `rnngen evaluate` does) and sampling
tokens/s. Goal (issue 5): order 8 builds in tens of seconds at most and evaluates in seconds.

With --budget-minutes M it then runs the full comparison docs/markov.md shows (n-gram orders
2, 3, 5 and rnn/lstm/gru for M minutes each) and keeps its markdown table in bench/out.

    python bench/compare_shakespeare.py                                   # about 1-2 minutes on 2 cores
    nice -n 10 python bench/compare_shakespeare.py --budget-minutes 5     # plus about 20 minutes
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import SHAKESPEARE, report, run_cli, scratch

from rnngen import api
from rnngen.models.ngram import state_bytes

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shakespeare_char.yaml"


def measure_order(order: int, out: Path) -> dict:
    run_dir = out / f"ngram-{order}"
    sets = [f"data.path={SHAKESPEARE}", "model.cell=ngram", f"model.order={order}", f"train.out_dir={run_dir}",
            f"data.prepared_dir={out / 'prepared'}"]  # fmt: skip
    wall, peak_mb, _ = run_cli(
        "train", "--config", str(CONFIG), *[a for s in sets for a in ("--set", s)], "--overwrite"
    )
    model = api.load(run_dir)
    started = time.perf_counter()
    scores = model.evaluate()
    eval_s = time.perf_counter() - started
    started = time.perf_counter()
    (sample,) = model.sample("ROMEO:", length=500, random_seed=0)
    return {
        "build_s": round(model.summary["elapsed_s"], 2),
        "train_command_s": round(wall, 1),
        "ngrams": model.module.stored_ngrams,
        "model_mb": round(state_bytes(model.module) / 1e6, 1),
        "peak_rss_mb": round(peak_mb),
        "val_bpc": round(scores.bpc, 4),
        "eval_s": round(eval_s, 2),
        "sample_tokens_per_s": round(sample.tokens / (time.perf_counter() - started)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=0, help="also run the full comparison (0 = skip)")
    args = parser.parse_args()
    out = scratch("compare_shakespeare")
    report("ngram_orders", {f"order {order}": measure_order(order, out) for order in range(1, 9)})
    if args.budget_minutes:
        sets = [f"data.path={SHAKESPEARE}", f"train.out_dir={out}", f"data.prepared_dir={out / 'prepared'}"]
        wall, _, proc = run_cli("compare", "--config", str(CONFIG), *[a for s in sets for a in ("--set", s)],
                                "--budget-minutes", str(args.budget_minutes))  # fmt: skip
        (out / "compare.md").write_text(proc.stdout)
        print(proc.stdout)
        report("compare_shakespeare", {"wall_s": round(wall), "table": str(out / "compare.md")})


if __name__ == "__main__":
    main()

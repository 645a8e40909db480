"""Prepare a generated 100 MB text at word level; report MB/s and peak memory.

Goal (issue 2): at least 10 MB/s and peak memory under 1 GB.
    python bench/prepare_speed.py [--mb 100]
"""

from __future__ import annotations

import argparse
import itertools
import random

from common import report, run_cli, scratch


def generate(path, megabytes: int) -> int:
    """Zipf-like words from a 30,000-word vocabulary, with punctuation and paragraphs."""
    rng = random.Random(0)
    words = [f"w{i}" + "abcdefghij"[i % 10] * (i % 5) for i in range(30000)]
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    target = megabytes * 1_000_000
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            sentence = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(5, 25)))
            line = (
                sentence.capitalize() + rng.choice([".", "!", "?", ", and"]) + ("\n\n" if rng.random() < 0.1 else " ")
            )
            f.write(line)
            written += len(line)
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    work = scratch("prepare")
    text = work / f"generated-{args.mb}mb.txt"
    if not text.exists() or text.stat().st_size < args.mb * 1_000_000:
        generate(text, args.mb)
    size_mb = text.stat().st_size / 1e6
    wall, peak_mb, _ = run_cli(
        "-q", "prepare", str(text), "--level", "word", "--out", str(work / "prepared"), "--force"
    )
    report("prepare_speed", {
        "input_mb": round(size_mb, 1),
        "seconds": round(wall, 2),
        "mb_per_s": round(size_mb / wall, 1),
        "peak_rss_mb": round(peak_mb),
        "goal": ">= 10 MB/s, peak < 1024 MB",
    })  # fmt: skip


if __name__ == "__main__":
    main()

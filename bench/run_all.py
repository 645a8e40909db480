"""`make bench`: run every benchmark script in turn and print its figures.

Each script also runs on its own (`python bench/NAME.py --help`) and keeps its figures in
bench/out/NAME.json. Benchmarks take minutes and want a quiet machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [
    "prepare_speed.py",
    "train_throughput.py",
    "sample_speed.py",
    "serve_load.py",
    "ddp_memory.py",
]


def main() -> int:
    """`make bench` (or `python bench/run_all.py --minutes M`: training minutes per arm of word_level.py and hmm.py)."""
    minutes = sys.argv[sys.argv.index("--minutes") + 1] if "--minutes" in sys.argv else None
    failed = []
    for name in SCRIPTS + [
        p.name for p in sorted(HERE.glob("*.py")) if p.name not in SCRIPTS + ["run_all.py", "common.py"]
    ]:
        print(f"--- {name}", flush=True)
        extra = ["--minutes", minutes] if minutes and name in ("word_level.py", "hmm.py") else []
        if subprocess.run([sys.executable, str(HERE / name), *extra], cwd=HERE).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

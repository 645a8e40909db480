"""What the damage checks cost: the checkpoint checksum against serializing, the ids' CRC-32 against a read.

A 300 MB checkpoint (25 M weights with their two Adam moments) and 200 MB of uint16 token ids (a
100 M-character corpus); each time is the best of three.

    python bench/checksum_cost.py
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from common import report, scratch

from rnngen import checkpoint
from rnngen.fileio import file_crc32


def best_of_three(work) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    weights = {f"w{i}": torch.randn(1000, 1000) for i in range(25)}
    moments = {i: {"exp_avg": torch.randn(1000, 1000), "exp_avg_sq": torch.randn(1000, 1000)} for i in range(25)}
    payload = {"model_state": weights, "optimizer_state": {"state": moments}}
    serialize = best_of_three(lambda: torch.save(payload, io.BytesIO()))
    digest = best_of_three(lambda: checkpoint._digest(payload))
    ids = scratch("checksum_cost") / "ids.bin"
    np.random.default_rng(0).integers(0, 60000, 100_000_000, dtype=np.uint16).tofile(ids)
    read = best_of_three(lambda: ids.read_bytes())
    crc = best_of_three(lambda: file_crc32(ids))
    ids.unlink()
    report("checksum_cost", {
        "checkpoint_mb": 300,
        "torch_save_to_memory_s": round(serialize, 3),
        "checkpoint_checksum_s": round(digest, 3),
        "checksum_over_save": round(digest / serialize, 2),
        "ids_mb": 200,
        "ids_plain_read_s": round(read, 3),
        "ids_read_and_crc32_s": round(crc, 3),
        "crc_over_read": round(crc / read, 2),
    })  # fmt: skip


if __name__ == "__main__":
    main()

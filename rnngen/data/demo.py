"""The built-in demo: what `rnngen train` does with no config, and what `make demo` runs.

The corpus is the Python reference manual's topic pages that ship inside every Python
installation (pydoc_data, about 460 KB of English), read at run time, so the demo works offline
with nothing committed. configs/demo.yaml holds the same settings, for reading and copying.
"""

DEMO_CONFIG = {
    "data": {"path": None, "level": "char", "val_fraction": 0.05},
    "model": {"cell": "lstm", "embedding_dim": 64, "hidden_size": 384, "num_layers": 1, "dropout": 0.0},
    "train": {
        "out_dir": "runs/demo",
        "batch_size": 32,
        "seq_len": 100,
        "lr": 0.004,
        "max_epochs": None,
        "max_minutes": 2.5,
        "warmup_steps": 20,
        "eval_every": 100,
        "save_every": 100,
    },
    "sample": {"seed": "The ", "length": 300, "temperature": 0.6},
}

"""The training layer: a config in, a run directory out.

The training loop (`trainer`), starting from another model (`finetune`), what every run writes
(`run_files`: the run directory, evaluation samples, checkpoint contents), the end-of-training
gradient summary (`gradient_summary`) and counting an n-gram model (`ngram_counting`). It may
import the core modules, data, models and generate (evaluation and samples during training).
"""

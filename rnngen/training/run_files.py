"""What a training run writes, one way for every model: the run directory, evaluation samples and
the contents of its checkpoints (metrics rows: rnngen.metrics).

The neural trainer (rnngen.training.trainer) and the n-gram counter (rnngen.training.ngram_counting) both write through
these functions, so a run directory looks the same whichever model made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rnngen import checkpoint
from rnngen import config as config_module
from rnngen.config import Config
from rnngen.errors import DataError, UserError
from rnngen.fileio import write_text
from rnngen.generate.sample import DecodeOptions, encode_seed, generate, seed_text
from rnngen.models.speller import Speller
from rnngen.runs import RunPaths, mark_latest


@dataclass
class ValidationSplit:
    """The validation text a run scores, as prepared: ids, characters, and the spelling bits of its <unk>."""

    ids: object  # memory-mapped token ids
    chars: int
    unk_bits: float  # what open-vocabulary bits per character adds (rnngen.models.speller)
    speller: dict  # checkpoint.SPELLER: the training text's distinct tokens, to spell other texts' <unk> later

    @classmethod
    def of(cls, prepared) -> ValidationSplit:
        ids = prepared.ids("val")
        if len(ids) < 2:
            raise DataError("the validation split has fewer than 2 tokens; raise data.val_fraction or give more text")
        types = prepared.training_types()
        unk_bits = Speller(types).total_bits(prepared.unknown_words()["val_counts"])
        return cls(ids, prepared.val_chars, unk_bits, {"types": types})


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    reason: str
    best_val_loss: float
    last_val: dict | None = None
    interrupted: bool = False


def start_run(config: Config, paths: RunPaths) -> None:
    """Create the run directory, save the resolved config in it and point runs/LATEST at it."""
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.config, config_module.to_yaml(config))
    mark_latest(paths.root)


# --------------------------------------------------------------------------- samples and checkpoints


def write_sample(model, vocab, config: Config, paths: RunPaths, step: int, device: torch.device) -> None:
    """samples/step-NNNNNNN.txt: train.sample_length tokens from the sample: seed, drawn with random seed `step`."""
    if config.train.sample_length == 0:
        return
    sample_config = config.sample
    try:
        seed_ids = encode_seed(vocab, sample_config.seed, "skip")
    except UserError:
        seed_ids = encode_seed(vocab, None)
    options = DecodeOptions.from_config(sample_config)
    options.length, options.num_samples, options.stop = config.train.sample_length, 1, ()
    options.random_seed = step  # its own generator: training's random stream is untouched
    (sample,) = generate(model, vocab, seed_ids, options, device)
    text = (seed_text(vocab, seed_ids) if sample_config.seed else "") + sample.text
    write_text(paths.samples / f"step-{step:07d}.txt", text + "\n")


def checkpoint_payload(config: Config, model_args: dict, weights: dict, vocab, summary: dict, **extra) -> dict:
    """What every checkpoint holds: config, model arguments, the weights to use (a state dict), vocabulary and
    summary (plus `extra`)."""
    return {
        checkpoint.CONFIG: config.to_dict(),
        checkpoint.MODEL_ARGS: model_args,
        checkpoint.MODEL_STATE: weights,
        checkpoint.VOCAB: vocab.to_dict(),
        checkpoint.SUMMARY: summary,
        **extra,
    }

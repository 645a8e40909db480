"""A small Python API over trained checkpoints, for notebooks and scripts.

    import rnngen.api as rnngen
    model = rnngen.load("runs/demo")             # a run directory or a .pt file
    for piece in model.generate("The", length=50, random_seed=1):
        print(piece, end="")
    print(model.evaluate("Some new text to score.").bpc)

The command line uses the same functions, so both behave alike.
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rnngen import checkpoint
from rnngen import config as config_module
from rnngen.data import tokens
from rnngen.data.vocab import UNK, UNK_ID, Vocab
from rnngen.errors import CheckpointError, DataError
from rnngen.generate.evaluate import Scores, evaluate_stream
from rnngen.generate.sample import DecodeOptions, Generation, Sample, encode_seed, seed_text
from rnngen.models import cache
from rnngen.models.embeddings import describe as describe_coverage
from rnngen.models.registry import build_model, count_parameters
from rnngen.models.speller import Speller
from rnngen.runs import resolve_checkpoint


class Model:
    """A trained model loaded from a checkpoint, with its vocabulary and config."""

    def __init__(self, payload: dict, path: Path, device: str = "cpu"):
        from rnngen.device import resolve_device

        self.path = path
        self.payload = payload
        self.device = resolve_device(device)
        try:
            self.config = config_module.from_dict(payload[checkpoint.CONFIG], origin=str(path))
            self.vocab = Vocab.from_dict(payload[checkpoint.VOCAB])
            self.model_args = payload[checkpoint.MODEL_ARGS]
            self.module = build_model(self.model_args)
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"{path} is damaged: {str(e).splitlines()[0][:200]}; use another checkpoint"
            ) from None
        checkpoint.restore(self.module, payload[checkpoint.MODEL_STATE], path)
        self.module.to(self.device).eval()

    @property
    def summary(self) -> dict:
        return self.payload.get(checkpoint.SUMMARY, {})

    # ----------------------------------------------------------------------- generation

    def sample_settings(self, config_path=None, sets=(), **values) -> config_module.SampleConfig:
        """The sample: settings in force: the checkpoint's, then a config file's, then --set items, then `values`
        (keys of the sample: section; None leaves a key to the layers below). Checked like any config."""
        flags = {f"sample.{key}": value for key, value in values.items()}
        return config_module.resolve(config_path, sets, flags, base=self.config.to_dict()).sample

    def generation(self, seed: str | None = None, on_unknown: str | None = None, **options) -> Generation:
        """A Generation to iterate (new text of every sample, step by step); see rnngen.generate.sample.

        `options` are keys of the sample: section (length, temperature, top_k, ...) over the checkpoint's.
        """
        return self.generation_with(self.sample_settings(seed=seed, on_unknown=on_unknown, **options))

    def generation_with(self, settings: config_module.SampleConfig) -> Generation:
        """A Generation with resolved sample: settings (see sample_settings)."""
        seed_ids = encode_seed(self.vocab, settings.seed, settings.on_unknown)
        shown = seed_text(self.vocab, seed_ids) if settings.seed else ""
        return Generation(self.module, self.vocab, seed_ids, DecodeOptions.from_config(settings), self.device, shown)

    def generate(self, seed: str | None = None, on_unknown: str | None = None, **options) -> Iterator[str]:
        """Stream the text of one sample, piece by piece (the seed is not repeated)."""
        for pieces in self.generation(seed, on_unknown, **{**options, "num_samples": 1}):
            if pieces[0]:
                yield pieces[0]

    def sample(self, seed: str | None = None, on_unknown: str | None = None, **options) -> list[Sample]:
        """Generate `num_samples` samples and return them whole."""
        generation = self.generation(seed, on_unknown, **options)
        for _ in generation:
            pass
        return generation.samples

    # ----------------------------------------------------------------------- evaluation

    def evaluate(self, text: str | None = None, batch_size: int = 1, use_cache: bool = True) -> Scores:
        """Scores on `text`, or on the model's own validation split when text is None.

        use_cache=False scores a model with a cache pointer (model.cache_size) by its network alone.
        """
        return self.evaluate_ids(*(self.encode_text(text) if text is not None else self.validation_ids()),
                                 batch_size=batch_size, use_cache=use_cache)  # fmt: skip

    def evaluate_ids(self, ids, chars: int, unknown: dict | None = None, batch_size=1, use_cache=True) -> Scores:
        """Scores of token ids whose predicted characters number `chars`; `unknown`: the words behind their <unk>
        targets with counts (each pays for its spelling in bpc_open)."""
        if len(ids) < 2:
            raise DataError("the text to evaluate has fewer than 2 tokens; give more text")
        unk_bits = self.speller.total_bits(unknown) if unknown else 0.0
        with contextlib.nullcontext() if use_cache else cache.disabled(self.module):
            return evaluate_stream(self.module, ids, chars, batch_size, self.device, unk_bits=unk_bits)

    @functools.cached_property
    def speller(self) -> Speller:
        """Spells unknown words for bpc_open, from the training text's tokens (checkpoints from before it
        recorded them: from the vocabulary)."""
        types = self.payload.get(checkpoint.SPELLER, {}).get("types")
        return Speller(types if types is not None else [t for t in self.vocab.tokens if t != UNK])

    def encode_text(self, text: str) -> tuple[np.ndarray, int, dict[str, int]]:
        """Token ids of `text` with the model's tokenizer, the predicted characters, and the words behind the
        predicted <unk> tokens with their counts."""
        pieces, ends = self.vocab.split_with_ends(text)
        ids = np.array(self.vocab.encode(pieces), dtype=np.int64)
        unknown = collections.Counter(pieces[i] for i in np.flatnonzero(ids == UNK_ID).tolist() if i > 0)
        return ids, tokens.predicted_chars(ends), dict(unknown)

    def validation_ids(self) -> tuple[np.ndarray, int, dict[str, int]]:
        """The checkpoint's own validation split, read from its prepared data (as encode_text returns a text)."""
        from rnngen.data.prepare import load_or_repair

        directory = self.config.prepared_dir()
        prepared = load_or_repair(self.config, "scoring the validation split (without --data)")
        if prepared.vocab.tokens != self.vocab.tokens:
            raise DataError(f"the prepared data in {directory} no longer matches {self.path}; pass --data FILE")
        return prepared.ids("val"), prepared.val_chars, prepared.unknown_words()["val_counts"]

    # ----------------------------------------------------------------------- info

    def info(self) -> dict:
        summary = self.summary
        val = summary.get("val") or {}
        return {
            "checkpoint": str(self.path),
            "level": self.vocab.level,
            "lowercase": self.vocab.lowercase,
            "vocab_size": len(self.vocab),
            **self._unk_counts(),
            "cell": self.model_args.get("cell"),
            "num_layers": self.model_args.get("num_layers"),
            "hidden_size": self.model_args.get("hidden_size"),
            "embedding_dim": self.model_args.get("embedding_dim"),
            "tie_weights": self.model_args.get("tie_weights"),
            "order": self.model_args.get("order"),
            "hmm_states": self.model_args.get("hmm_states"),
            "stored_ngrams": summary.get("stored_ngrams"),
            "input": self.model_args.get("input"),
            "output": self.model_args.get("output"),
            "adaptive_cutoffs": self.model_args.get("cutoffs"),
            "adaptive_tails": self._tail_layout(),
            "cache": self.model_args.get("pointer"),
            "spelling_rows": (self.model_args.get("spelling") or {}).get("count"),  # shared rows; None: off
            "embeddings": describe_coverage(summary["embeddings"]) if summary.get("embeddings") else None,
            "init_from": _describe_source(summary["init_from"]) if summary.get("init_from") else None,
            "parameters": count_parameters(self.module),
            "step": summary.get("step"),
            "epoch": summary.get("epoch"),
            "tokens_seen": summary.get("tokens"),
            "training_minutes": round(summary.get("elapsed_s", 0.0) / 60, 2),
            "best_val_loss": summary.get("best_val_loss"),
            "val_loss": val.get("loss"),
            "val_bpc": val.get("bpc"),
            "val_bpc_open": val.get("bpc_open"),  # None: trained before open-vocabulary bpc
            "average": self.config.train.average,
            "averaged_steps": summary.get("averaged_steps"),
            "format_version": self.payload.get("format_version"),
            "rnngen_version": self.payload.get("rnngen_version"),
            "config": self.config.to_dict(),
        }

    def _tail_layout(self) -> str | None:
        """How the adaptive softmax scores its tail clusters: "tied" (embedding rows) or "projected"; None if full."""
        if self.model_args.get("output") != "adaptive":
            return None
        return "tied" if self.model_args.get("tied_tails") else "projected"

    def _unk_counts(self) -> dict:
        """<unk> tokens in the prepared text and their share; None for checkpoints that did not record them."""
        counts = self.summary.get("prepared") or {}
        unk, total = counts.get("unk_tokens"), counts.get("tokens")
        if unk is None or not total:
            return {"unk_tokens": None, "unk_rate": None}
        return {"unk_tokens": unk, "unk_rate": unk / total}


def _describe_source(record: dict) -> str:
    """What a fine-tuned checkpoint recorded of the model it started from (train.init_from)."""
    step = f" (step {record['step']:,})" if record.get("step") is not None else ""
    return f"{record['checkpoint']}{step}, +{record['added_tokens']:,} tokens"


def load(
    path: str | Path | None = None, device: str = "cpu", *, checkpoint_file=None, config_path=None, sets=()
) -> Model:
    """Load the model the user meant, for the API and every command.

    `path`: a checkpoint file or a run directory (its best.pt, else last.pt); `checkpoint_file`: exactly this
    file (`--checkpoint`). With neither, the run directory of a config (train.out_dir of config_path and the
    --set items), else the latest run (runs/LATEST).
    """
    out_dir = None
    if path is None and checkpoint_file is None and (config_path or any(s.startswith("train.out_dir=") for s in sets)):
        out_dir = config_module.resolve(config_path, sets).train.out_dir
    try:
        file = resolve_checkpoint(checkpoint_file, path, out_dir)
    except CheckpointError as e:
        if out_dir is None:
            raise
        raise CheckpointError(f"{e} (the run directory is train.out_dir of {config_path or '--set'})") from None
    return Model(checkpoint.load(file), file, device)

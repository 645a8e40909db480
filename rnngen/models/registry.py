"""Every kind of model by its model.cell name, and rebuilding one from a checkpoint's model_args.

A checkpoint stores plain model arguments, never a class or module path; `build_model` finds the
class by the `cell` argument. So checkpoints keep loading however the package is laid out.
"""

from __future__ import annotations

from torch import nn

from rnngen.models import hmm, recurrent
from rnngen.models.hmm import HiddenMarkovLM
from rnngen.models.ngram import NgramLM
from rnngen.models.recurrent import RNNLM

# model.cell -> the class that model_args rebuild; ngram is the count-based Markov baseline, hmm the hidden one
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "rnn": RNNLM,
    "lstm": RNNLM,
    "gru": RNNLM,
    "ngram": NgramLM,
    "hmm": HiddenMarkovLM,
}


def model_args(model_config, vocab_size: int, tokens: list[str] | None = None) -> dict:
    """The model_args of a new trained model of model.cell (n-gram runs make theirs from the counts)."""
    if model_config.cell == "hmm":
        return hmm.model_args(model_config, vocab_size)
    return recurrent.model_args(model_config, vocab_size, tokens)


def describe(args: dict) -> str:
    """A model's shape in a few words, from its model_args: "lstm 2x512", "hmm with 256 states"."""
    if args["cell"] == "hmm":
        return f"hmm with {args['hmm_states']:,} states"
    return f"{args['cell']} {args['num_layers']}x{args['hidden_size']}"


def build_model(args: dict) -> nn.Module:
    """Rebuild a model from the model_args stored in a checkpoint."""
    return MODEL_CLASSES[args["cell"]](**args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

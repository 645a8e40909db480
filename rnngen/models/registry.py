"""Every kind of model by its model.cell name, and rebuilding one from a checkpoint's model_args.

A checkpoint stores plain model arguments, never a class or module path; `build_model` finds the
class by the `cell` argument. So checkpoints keep loading however the package is laid out.
"""

from __future__ import annotations

from torch import nn

from rnngen.models import recurrent
from rnngen.models.ngram import NgramLM
from rnngen.models.recurrent import RNNLM

# model.cell -> the class that model_args rebuild; ngram is the count-based Markov baseline
MODEL_CLASSES: dict[str, type[nn.Module]] = {"rnn": RNNLM, "lstm": RNNLM, "gru": RNNLM, "ngram": NgramLM}


def model_args(model_config, vocab_size: int, tokens: list[str] | None = None) -> dict:
    """The model_args of a new trained model of model.cell (n-gram runs make theirs from the counts)."""
    return recurrent.model_args(model_config, vocab_size, tokens)


def build_model(args: dict) -> nn.Module:
    """Rebuild a model from the model_args stored in a checkpoint."""
    return MODEL_CLASSES[args["cell"]](**args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Recipes: the settings a run gets for the keys nobody set, chosen by the text's level and the budget.

The field defaults of rnngen.config suit characters (a 2x512 LSTM, AdamW). A word model of a novel
wants something else altogether (a small tied LSTM, heavy dropout, plain SGD at a high rate), and a
long budget wants a bigger, more heavily regularised model than a short one, or it over-fits. So
between the field defaults and the user's config sits one more layer, a recipe:

    field defaults < recipe < config file < --set < flags

`train.recipe: auto` (the default) picks it from `data.level` and the budget: `train.max_minutes`
when set, else `train.max_epochs`. A budget of LONG_MINUTES minutes or LONG_EPOCHS epochs and more
is long. `none` keeps the plain field defaults; a name picks that recipe. The resolved config
records the recipe chosen (`train.recipe`), so `rnngen info` and the run's config.yaml say it, and
a checkpoint's config is never re-resolved through a recipe.

The word recipes are `configs/hunger.yaml` and `configs/hunger_long.yaml` without their paths and
budgets, and the subword one is `configs/novel_subword.yaml`'s (tests keep them equal); what each
setting does and what they measured is in the configs' comments and docs/word-level.md. The
recurrent recipes are for the recurrent cells: the hidden Markov model has its own, the n-gram none.
"""

from __future__ import annotations

LONG_MINUTES = 40
LONG_EPOCHS = 60

_WORD_DATA = {"min_freq": 2}
_WORD_MODEL = {
    "cell": "lstm", "embedding_dim": 200, "hidden_size": 200, "num_layers": 2, "tie_weights": True, "spelling": True,
    "output": "auto", "dropout": 0.2, "locked_dropout": True, "dropout_input": 0.2, "dropout_hidden": 0.2,
    "dropout_output": 0.2, "embedding_dropout": 0.05, "weight_drop": 0.1, "cache_size": 500,
}  # fmt: skip
_WORD_TRAIN = {
    "optimizer": "sgd", "lr": 20.0, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.25, "lr_schedule": "cosine",
    "min_lr_ratio": 0.05, "warmup_steps": 0, "batch_size": 20, "seq_len": 35, "variable_bptt": True,
    "eval_every": 250, "save_every": 250, "average": "ema", "ema_decay": 0.999,
}  # fmt: skip

RECIPES: dict[str, dict[str, dict]] = {
    "char": {},  # the field defaults are the character recipe
    "word": {"data": _WORD_DATA, "model": _WORD_MODEL, "train": _WORD_TRAIN},
    "word-long": {  # twice as wide and far more heavily regularised: it keeps improving for an hour
        "data": _WORD_DATA,
        "model": {**_WORD_MODEL, "embedding_dim": 400, "hidden_size": 400, "dropout_input": 0.4, "dropout_hidden": 0.3,
                  "dropout_output": 0.4, "embedding_dropout": 0.1, "weight_drop": 0.4},
        "train": _WORD_TRAIN,
    },
    "subword": {
        "data": {"vocab_size": 4000},
        "model": {
            "cell": "lstm", "embedding_dim": 256, "hidden_size": 256, "num_layers": 2, "tie_weights": True,
            "output": "full", "locked_dropout": True, "dropout_input": 0.25, "dropout_hidden": 0.2,
            "dropout_output": 0.3, "embedding_dropout": 0.05, "weight_drop": 0.2, "cache_size": 500,
        },
        "train": {"batch_size": 24, "seq_len": 60, "variable_bptt": True, "ar_alpha": 2.0, "tar_beta": 1.0,
                  "lr": 0.003, "weight_decay": 0.01, "eval_every": 250, "save_every": 250},
    },
}  # fmt: skip
RECIPES["hmm"] = {
    # the hidden Markov model (cell hmm), at any level:
    # it trains with these for the keys it does not set: each logit must travel far from its random start (a
    # state's emission falls from 1/V to nearly 0 for most tokens), which Adam at the recurrent cells' 2e-3 takes
    # thousands of steps to do; after 150 steps, 4.85 nats per word at 0.3 against 5.85 at 0.03 (docs/markov.md).
    # Weight decay would pull every distribution back towards uniform.
    "train": {"optimizer": "adamw", "lr": 0.3, "weight_decay": 0.0},
}
NAMES = ("auto", "none", *RECIPES)


def choose(requested: str, cell, level, max_minutes, max_epochs) -> str:
    """The recipe's name: `requested` itself, or for auto the one for the cell, the level and the budget ("none"
    for the n-gram model, which has nothing to set, and for an unknown level: the config check names it)."""
    if requested != "auto":
        return requested
    if cell in ("hmm", "ngram"):
        return "hmm" if cell == "hmm" else "none"
    if level not in ("char", "word", "subword"):
        return "none"
    if level != "word":
        return level
    return "word-long" if _long(max_minutes, max_epochs) else "word"


def _long(max_minutes, max_epochs) -> bool:
    try:
        if max_minutes is not None:
            return float(max_minutes) >= LONG_MINUTES
        return max_epochs is not None and float(max_epochs) >= LONG_EPOCHS
    except (TypeError, ValueError):  # not a number: the config check reports it
        return False


def settings(name: str) -> dict[str, dict]:
    """{section: {key: value}} of a recipe ({} for none, and for a value that is not a recipe's name: the config
    check names it)."""
    return RECIPES.get(name, {}) if isinstance(name, str) else {}

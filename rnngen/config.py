"""Typed settings: one frozen dataclass per config section, and the merge that builds them.

Precedence: field defaults < YAML file < `--set section.key=value` < explicit flags. The field
defaults below are the only defaults in the program. Every problem found is collected and
reported at once as a ConfigError (exit 2) naming the key, the value, where it came from and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rnngen import recipes
from rnngen.errors import ConfigError

SECTIONS = ("data", "model", "train", "sample")


def setting(default, help: str, *, min=None, max=None, above=None, below=None):
    """A config field with its help text and range; `above`/`below` are exclusive bounds."""
    bounds = {"min": min, "max": max, "above": above, "below": below}
    kwargs = {"default_factory": lambda: default} if isinstance(default, (list, dict)) else {"default": default}
    return field(metadata={"help": help, **bounds}, **kwargs)


# What a fine-tuning run (train.init_from) uses for the keys it does not set: a gentler start than the field
# defaults, so the first updates do not wash out what the source model learned.
FINE_TUNE_DEFAULTS = {"lr": 1e-3, "warmup_steps": 20}
HMM_DEFAULTS = recipes.RECIPES["hmm"]["train"]  # what cell hmm trains with unless set (rnngen.recipes)
FREEZABLE = ("embedding", "rnn", "output")  # train.freeze names; rnn.N names one layer
# What cell hmm refuses when set (config.recurrent_only); hidden_size, num_layers, dropout ... it just ignores.
RECURRENT_ONLY = {
    "model": ("tie_weights", "input", "embeddings_path", "embeddings_freeze", "spelling", "output", "adaptive_cutoffs",
              "locked_dropout", "dropout_input", "dropout_hidden", "dropout_output", "embedding_dropout",
              "weight_drop", "cache_size"),
    "train": ("ar_alpha", "tar_beta", "freeze"),
}  # fmt: skip
HMM_MAX_STATES = 32_768  # Chiu & Rush 2020 trained 2^15 states on GPUs; the K x K transition is then 4 GB


@dataclass(frozen=True)
class DataConfig:
    path: tuple[str, ...] | None = setting(
        None, "text file(s), glob(s) or directories to learn from; null = the built-in demo corpus"
    )
    level: Literal["char", "word", "subword"] = setting(
        "char", "token level: char (every character), word, or subword (byte-level BPE learned from the text)"
    )
    vocab_size: int = setting(
        8000, "subword level: tokens of the learned BPE vocabulary, the 256 bytes included", min=256, max=1_000_000
    )
    lowercase: bool = setting(False, "lowercase the text before tokenizing")
    min_freq: int = setting(1, "tokens seen fewer times become <unk>", min=1)
    max_vocab: int | None = setting(None, "keep only the most frequent tokens (null = all)", min=2)
    val_fraction: float = setting(0.05, "share of the text, taken from the END, used for validation", above=0, below=1)
    prepared_dir: str | None = setting(None, "where prepared data goes (null = <train.out_dir>/prepared)")
    errors: Literal["strict", "replace"] = setting(
        "strict", "invalid UTF-8: strict = stop with an error, replace = use U+FFFD"
    )
    vocab_from: str | None = setting(
        None, "use exactly the vocabulary of this checkpoint or run (tokens it lacks become <unk>); null = build one"
    )


@dataclass(frozen=True)
class ModelConfig:
    cell: Literal["rnn", "lstm", "gru", "ngram", "hmm"] = setting(
        "lstm",
        "recurrent cell: rnn (tanh/relu), lstm or gru; or ngram, the count-based Markov baseline; or hmm, a "
        "Hidden Markov Model",
    )
    nonlinearity: Literal["tanh", "relu"] = setting("tanh", "activation of the plain rnn cell")
    embedding_dim: int = setting(256, "size of the learned token embedding", min=1)
    hidden_size: int = setting(512, "size of the hidden state h_t of each layer", min=1)
    num_layers: int = setting(2, "stacked recurrent layers", min=1)
    dropout: float = setting(0.2, "dropout on embeddings, between layers and before the output", min=0, below=1)
    tie_weights: bool = setting(False, "share the embedding and output matrices (needs embedding_dim == hidden_size)")
    input: Literal["embedding", "onehot"] = setting(
        "embedding", "embedding (a learned vector per token) or onehot (x_t is a vocabulary-sized one-hot vector)"
    )
    embeddings_path: str | None = setting(
        None, "start the embedding from pre-trained word vectors: GloVe text, word2vec text or binary (.gz too)"
    )
    embeddings_freeze: bool = setting(False, "keep the pre-trained embedding fixed during training")
    spelling: bool = setting(
        False, "word level: each word's vector adds rows shared by spelling: case variants (And/and), shape, endings"
    )
    output: Literal["auto", "full", "adaptive"] = setting(
        "auto", "full softmax, adaptive softmax (fast for big vocabularies), or auto: adaptive from 5,000 tokens"
    )
    adaptive_cutoffs: tuple[int, ...] | None = setting(
        None,
        "adaptive output: ids where the head and each tail cluster end (null = a tenth of the vocabulary, then x5)",
    )
    order: int = setting(5, "cell ngram only: predict each token from the order-1 tokens before it", min=1, max=16)
    hmm_states: int = setting(
        256, "cell hmm only: hidden states K; each token costs K^2 + K multiply-adds", min=1, max=HMM_MAX_STATES
    )
    locked_dropout: bool = setting(
        False, "variational dropout: one mask per sequence, reused at every time step (AWD-LSTM), not one per step"
    )
    dropout_input: float | None = setting(
        None, "dropout rate on the embedding output (null = model.dropout)", min=0, below=1
    )
    dropout_hidden: float | None = setting(
        None, "dropout rate between stacked layers (null = model.dropout)", min=0, below=1
    )
    dropout_output: float | None = setting(
        None, "dropout rate on the last layer's output, before the output layer (null = model.dropout)", min=0, below=1
    )
    embedding_dropout: float = setting(
        0.0, "drop whole words: rows of the embedding zeroed per batch, the rest scaled by 1/(1-p)", min=0, below=1
    )
    weight_drop: float = setting(
        0.0, "DropConnect on each layer's hidden-to-hidden matrix, one mask per forward pass (training only)",
        min=0, below=1,
    )  # fmt: skip
    cache_size: int = setting(
        0, "continuous cache pointer: scoring (not sampling) also draws on the last N (output, next token) pairs; 0 = off",
        min=0,
    )  # fmt: skip
    cache_theta: float = setting(1.0, "cache pointer: how sharply the present output is matched to cached ones", min=0)
    cache_lambda: float = setting(
        0.1, "cache pointer: the share of the probability that the cache gives", above=0, below=1
    )


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = setting("runs/default", "run directory: config, checkpoints, metrics, samples")
    batch_size: int = setting(64, "parallel token streams per step", min=1)
    seq_len: int = setting(128, "truncated BPTT length: time steps per window", min=1)
    max_steps: int | None = setting(None, "stop after this many optimizer steps", min=1)
    max_epochs: float | None = setting(10, "stop after this many passes over the training text", above=0)
    max_minutes: float | None = setting(None, "stop after this much wall time", above=0)
    target_loss: float | None = setting(None, "stop once validation loss (nats/token) falls below this", above=0)
    patience: int | None = setting(None, "stop after this many evaluations without improvement", min=1)
    optimizer: Literal["adamw", "sgd"] = setting("adamw", "adamw or sgd (with momentum)")
    lr: float = setting(2e-3, f"peak learning rate (cell hmm: {HMM_DEFAULTS['lr']:g} unless set)", above=0)
    weight_decay: float = setting(0.01, "decoupled weight decay (adamw) or L2 (sgd); cell hmm: 0 unless set", min=0)
    momentum: float = setting(0.9, "sgd momentum", min=0, below=1)
    lr_schedule: Literal["cosine", "constant", "plateau"] = setting(
        "cosine", "after warmup: cosine decay, constant, or divide on a validation plateau"
    )
    warmup_steps: int = setting(50, "linear warmup steps", min=0)
    min_lr_ratio: float = setting(0.1, "cosine decays to lr * min_lr_ratio", min=0, max=1)
    decay_steps: int | None = setting(
        None, "length of the cosine decay in steps (null = from max_steps, max_epochs or max_minutes)", min=1
    )
    plateau_factor: float = setting(
        0.5, "plateau schedule: multiply lr by this when validation stalls", above=0, below=1
    )
    grad_clip: float | None = setting(1.0, "clip the global gradient norm to this (null = off)", above=0)
    reset_state: bool = setting(False, "start every window from a zero hidden state instead of carrying it")
    eval_every: int = setting(200, "evaluate, sample and save best.pt every N steps", min=1)
    eval_batch_size: int = setting(16, "parallel streams used to run through the validation text", min=1)
    save_every: int = setting(200, "save last.pt every N steps (and always when stopping)", min=1)
    log_every: int = setting(20, "write a metrics row every N steps", min=1)
    sample_length: int = setting(200, "tokens in the sample written at each evaluation (0 = none)", min=0)
    seed: int = setting(1337, "random seed: the same seed repeats a CPU run exactly", min=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = setting("auto", "auto prefers cuda, then mps, then cpu")
    threads: int | None = setting(None, "CPU threads for torch (null = torch's default)", min=1)
    grad_accum_steps: int = setting(
        1, "split each batch into this many micro-batches (same result, less memory); must divide batch_size", min=1
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto", "auto = bf16 autocast on CUDA GPUs that support it, else fp32; fp16 uses loss scaling (CUDA only)"
    )
    compile: bool = setting(False, "compile the model with torch.compile (can speed up GPU training; slow to start)")
    init_from: str | None = setting(
        None,
        "start from the weights, architecture and vocabulary of this checkpoint or run (fine-tuning); "
        "the vocabulary grows by the new text's tokens; unless set, lr is "
        f"{FINE_TUNE_DEFAULTS['lr']:g} and warmup_steps {FINE_TUNE_DEFAULTS['warmup_steps']}",
    )
    freeze: tuple[str, ...] = setting(
        (), "parts kept fixed while training: embedding, rnn (every layer), rnn.N (layer N, from 0), output"
    )
    ar_alpha: float = setting(
        0.0, "activation regularisation: add ar_alpha * mean(o_t^2) of the last layer's dropped outputs", min=0
    )
    tar_beta: float = setting(
        0.0, "temporal activation regularisation: add tar_beta * mean((h_t - h_{t-1})^2) of the last layer", min=0
    )
    variable_bptt: bool = setting(
        False, "draw each window's length around seq_len (AWD-LSTM) and scale the learning rate by length/seq_len"
    )
    recipe: Literal["auto", "none", "char", "word", "word-long", "subword", "hmm"] = setting(
        "auto",
        "settings for the keys no config sets: auto = by data.level and the budget (max_minutes, else max_epochs); "
        "none = the field defaults; or a recipe by name. A run's config records the recipe used",
    )
    average: Literal["none", "ema", "nt-asgd"] = setting(
        "none",
        "weights that validation, best.pt and sampling use: none = the trained ones; ema = their exponential moving "
        "average; nt-asgd = their mean since validation stalled for average_patience evaluations (AWD-LSTM)",
    )
    ema_decay: float = setting(
        0.999, "average: ema: each step keeps this share of the average (less in the first ~10/(1-d) steps)",
        above=0, below=1,
    )  # fmt: skip
    average_patience: int = setting(
        3, "average: nt-asgd: evaluations without improvement before averaging starts", min=1
    )


@dataclass(frozen=True)
class SampleConfig:
    seed: str | None = setting(None, "seed text the sample starts from (null = start of a line)")
    length: int = setting(300, "tokens to generate after the seed", min=0)
    temperature: float = setting(0.8, "softmax temperature; 0 = greedy argmax", min=0)
    top_k: int | None = setting(None, "draw only from the k most likely tokens", min=1)
    top_p: float | None = setting(None, "draw only from the smallest set with this much probability", above=0, max=1)
    repetition_penalty: float = setting(1.0, "divide the odds of tokens already generated by this (1 = off)", above=0)
    num_samples: int = setting(1, "samples generated together as one batch", min=1)
    random_seed: int | None = setting(None, "random seed for exactly repeatable samples", min=0)
    stop: tuple[str, ...] = setting((), "end a sample when any of these texts appears")
    max_time: float | None = setting(None, "stop generating after this many seconds", above=0)
    on_unknown: Literal["error", "unk", "skip", "nearest"] = setting(
        "error", "seed tokens not in the vocabulary: error, map to <unk>, skip, or nearest known token"
    )
    include_seed: bool = setting(True, "print the seed before the generated text")
    allow_unk: bool = setting(False, "let samples contain the <unk> token (by default it gets zero probability)")
    precision: Literal["fp32", "bf16", "int8"] = setting(
        "fp32", "weights of rnn/lstm/gru steps on the CPU: fp32, bf16 (CPUs with bf16 instructions) or int8 per-row"
    )


SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "sample": SampleConfig}


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    recipe_keys: tuple[str, ...] = field(default=(), compare=False)  # the dotted keys train.recipe filled in

    def to_dict(self) -> dict:
        """Plain data only (lists, not tuples), safe for YAML, JSON and weights_only checkpoints."""
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}

    def prepared_dir(self) -> Path:
        return Path(self.data.prepared_dir or Path(self.train.out_dir) / "prepared")

    def replace(self, **sections) -> Config:
        return dataclasses.replace(self, **sections)


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- key catalogue


def _hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTION_TYPES[section])


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(SECTION_TYPES[s])]


# Names other tools use for our keys: the "did you mean" for those that difflib cannot guess.
ALIASES = {
    "learning_rate": "lr", "epochs": "max_epochs", "steps": "max_steps", "iters": "max_steps",
    "max_iters": "max_steps", "hidden": "hidden_size", "rnn_size": "hidden_size", "layers": "num_layers",
    "n_layer": "num_layers", "batch": "batch_size", "bptt": "seq_len", "seq_length": "seq_len",
    "block_size": "seq_len", "clip": "grad_clip", "embed_dim": "embedding_dim", "emsize": "embedding_dim",
    "model_type": "cell", "rnn_type": "cell", "type": "cell", "tied": "tie_weights", "temp": "temperature",
    "embeddings": "embeddings_path", "pretrained": "embeddings_path", "cutoffs": "adaptive_cutoffs",
}  # fmt: skip


def _suggest(key: str, candidates: list[str]) -> str:
    section, _, name = key.partition(".")
    if name in ALIASES:
        aliased = [c for c in candidates if c.endswith("." + ALIASES[name])]
        if aliased:
            return f"; did you mean `{aliased[0]}`?"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close and "." in key:  # a right key under the wrong section, or a near miss of the name alone
        tail = key.split(".", 1)[1]
        names = {c.split(".", 1)[1]: c for c in candidates if "." in c}  # section names have no dot
        found = difflib.get_close_matches(tail, list(names), n=1, cutoff=0.6)
        close = [names[found[0]]] if found else []
    return f"; did you mean `{close[0]}`?" if close else ""


# --------------------------------------------------------------------------- coercion


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(parts) + " or null"
    if origin is tuple:
        return "a whole number or a list of them" if typing.get_args(hint)[0] is int else "a text or a list of texts"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a text"}.get(hint, str(hint))


class _Bad(Exception):
    """One value that does not fit its key; the message says what is allowed."""


def _coerce(value, hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0])
    if value is None:
        raise _Bad(f"must be {_describe(hint)}, not null")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise _Bad(f"must be {_describe(hint)}")
        return value
    if isinstance(value, tuple):  # the Python API's values (YAML and --set give lists)
        value = list(value)
    if origin is tuple and typing.get_args(hint)[0] is int:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise _Bad(f"must be {_describe(hint)}")
        return tuple(items)
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise _Bad("must be a text or a list of texts")
        return tuple(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise _Bad("must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("must be a whole number")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _Bad("must be a number") from None
        try:
            finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:  # an integer beyond the float range
            finite = False
        if not finite:
            raise _Bad("must be a finite number")
        return float(value)
    if hint is str:
        if isinstance(value, bool):
            raise _Bad("must be a text (quote it: YAML reads yes/no/true/false as booleans)")
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise _Bad("must be a text")
        return value
    raise AssertionError(f"unsupported config type {hint}")  # pragma: no cover - programming error


def _check_range(value, meta) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if meta.get("min") is not None and value < meta["min"]:
        return f"must be at least {meta['min']}"
    if meta.get("max") is not None and value > meta["max"]:
        return f"must be at most {meta['max']}"
    if meta.get("above") is not None and meta.get("below") is not None:
        if not meta["above"] < value < meta["below"]:
            return f"must be between {meta['above']} and {meta['below']} (both excluded)"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be greater than {meta['above']}"
    if meta.get("below") is not None and value >= meta["below"]:
        low = meta.get("min", meta.get("above"))
        return f"must be {'at least ' + str(low) + ' and ' if low is not None else ''}below {meta['below']}"
    return None


# --------------------------------------------------------------------------- YAML loading


def _yaml_loader():
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys instead of silently keeping the last."""

    def construct_mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key `{key}` (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def load_yaml_file(path: str | Path) -> dict:
    """Read a config file into a mapping; syntax errors name the file and line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; check the path (ready configs are in configs/)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    if text.startswith(SAVED_HEADER) and SAVED_FOOTER.strip() not in text:
        raise ConfigError(
            f"{path} is a run's saved config, cut short (its last line is missing): the file is damaged; "
            "`rnngen info RUN_DIR` prints the run's config from its checkpoint"
        )
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        hint = (
            " (YAML does not allow tabs for indentation; use spaces)" if "\t" in problem or "'\\t'" in problem else ""
        )
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}{hint}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a mapping of sections (data:, model:, train:, sample:), got {type(data).__name__}"
        )
    return data


# --------------------------------------------------------------------------- resolution


def parse_set(item: str) -> tuple[str, Any]:
    """`section.key=value` -> (dotted key, value parsed as YAML; raw text for text keys)."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, for example --set train.lr=0.001")
    section, name = key.split(".", 1)
    hint = _hints(section).get(name) if section in SECTION_TYPES else None
    if hint in (str, str | None):
        return key, (None if raw.strip() in ("null", "~") else raw)
    try:
        return key, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return key, raw


def resolve(
    config_path: str | Path | None = None,
    sets: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
    base: dict | None = None,
    defaults: dict | None = None,
) -> Config:
    """Build a Config from the field defaults, a recipe, a YAML file, --set items and flags.

    `base` is a resolved config dict (from a checkpoint or a run) that stands in for the defaults: it has
    every key already, so no recipe fills in (a key newer than the checkpoint gets its field default).
    `defaults` is a mapping under the file (the demo settings), above the recipe.
    """
    layers: list[tuple[str, dict]] = []
    if defaults is not None:
        layers.append(("the demo settings", defaults))
    if base is not None:
        layers.append(("the checkpoint", base))
    if config_path is not None:
        layers.append((str(config_path), load_yaml_file(config_path)))
    set_values: dict[str, dict] = {}
    for item in sets:
        key, value = parse_set(item)
        section, name = key.split(".", 1)
        set_values.setdefault(section, {})[name] = value
    if set_values:
        layers.append(("--set", set_values))
    flag_values: dict[str, dict] = {}
    for key, value in (flags or {}).items():
        if value is not None:
            section, name = key.split(".", 1)
            flag_values.setdefault(section, {})[name] = value
    if flag_values:
        layers.append(("the command line", flag_values))
    return build(layers, recipe=base is None)


def build(layers: list[tuple[str, dict]], recipe: bool = True) -> Config:
    """Merge (origin, mapping) layers over the defaults (and a recipe, see rnngen.recipes), coerce and check
    every value."""
    problems: list[str] = []
    merged = _merge(layers, problems)
    if merged["train"].get("init_from", (None,))[0] is not None:  # fine-tuning: gentler defaults
        for name, value in FINE_TUNE_DEFAULTS.items():
            merged["train"].setdefault(name, (value, "the fine-tuning defaults"))
    from_recipe = _apply_recipe(merged) if recipe else ()
    sections = {section: _section(section, merged[section], problems) for section in SECTIONS}
    config = Config(**sections, recipe_keys=from_recipe)
    if not problems:
        problems.extend(_blame_recipe(problem, from_recipe, config.train.recipe) for problem in check(config))
    if problems:
        if len(problems) == 1:
            raise ConfigError(problems[0])
        raise ConfigError(f"{len(problems)} problems in the config:\n  - " + "\n  - ".join(problems))
    return config


def _merge(layers: list[tuple[str, dict]], problems: list[str]) -> dict[str, dict[str, tuple[Any, str]]]:
    """{section: {key: (value, origin)}}, later layers over earlier ones; unknown sections and keys go to problems."""
    merged: dict[str, dict[str, tuple[Any, str]]] = {s: {} for s in SECTIONS}
    keys = valid_keys()
    for origin, mapping in layers:
        for section, values in mapping.items():
            if section not in SECTION_TYPES:
                problems.append(f"unknown section `{section}` in {origin}{_suggest(str(section), list(SECTIONS))}")
                continue
            if values is None:
                continue
            if not isinstance(values, dict):
                problems.append(f"`{section}` in {origin} must be a mapping of keys, got {values!r}")
                continue
            hints = _hints(section)
            for name, value in values.items():
                if name not in hints:
                    problems.append(f"unknown key `{section}.{name}` in {origin}{_suggest(f'{section}.{name}', keys)}")
                    continue
                merged[section][name] = (value, origin)
    return merged


def _apply_recipe(merged: dict) -> tuple[str, ...]:
    """Fill the keys no layer set from the recipe for the level and budget; the dotted keys it filled."""

    def value(section: str, key: str):
        return merged[section][key][0] if key in merged[section] else _field_default(section, key)

    name = recipes.choose(
        value("train", "recipe"), value("model", "cell"), value("data", "level"),
        value("train", "max_minutes"), value("train", "max_epochs"),
    )  # fmt: skip
    filled = []
    for section, values in recipes.settings(name).items():
        for key, setting_value in values.items():
            if key not in merged[section]:
                merged[section][key] = (setting_value, f"the {name} recipe")
                filled.append(f"{section}.{key}")
    if name in recipes.NAMES:  # the resolved config says which recipe it is made of
        merged["train"]["recipe"] = (name, merged["train"].get("recipe", (None, "the recipe"))[1])
    return tuple(filled)


def _blame_recipe(problem: str, filled: tuple[str, ...], name: str) -> str:
    """A rule broken by a key the recipe filled in: say so, and how to take that key over."""
    keys = [key for key in filled if key in problem]
    if not keys:
        return problem
    return f"{problem} ({', '.join(keys)} came from the {name} recipe: set them yourself, or set train.recipe: none)"


def _field_default(section: str, key: str):
    field_ = SECTION_TYPES[section].__dataclass_fields__[key]
    return field_.default if field_.default is not dataclasses.MISSING else field_.default_factory()


def _section(section: str, values: dict[str, tuple[Any, str]], problems: list[str]):
    """One section's dataclass from its merged (value, origin) pairs; a value that does not fit goes to problems."""
    cls, hints, kept = SECTION_TYPES[section], _hints(section), {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        raw, origin = values[f.name]
        try:
            value = _coerce(raw, hints[f.name])
        except _Bad as e:
            problems.append(f"{section}.{f.name}: {e} (got {raw!r}, from {origin})")
            continue
        out_of_range = _check_range(value, f.metadata)
        if out_of_range:
            problems.append(f"{section}.{f.name}: {out_of_range} (got {raw!r}, from {origin})")
            continue
        kept[f.name] = value
    return cls(**kept)


def check(config: Config) -> list[str]:
    """Rules that involve more than one key."""
    problems = []
    m, t = config.model, config.train
    if m.tie_weights and m.embedding_dim != m.hidden_size:
        problems.append(
            f"model.tie_weights needs model.embedding_dim == model.hidden_size "
            f"(got {m.embedding_dim} and {m.hidden_size}); make them equal or set tie_weights: false"
        )
    problems.extend(_check_input_and_output(m))
    problems.extend(_check_spelling(config))
    problems.extend(_check_hmm(config))
    problems.extend(f"train.freeze: {problem}" for problem in map(_check_freeze_name, t.freeze) if problem)
    if t.batch_size % t.grad_accum_steps:
        problems.append(
            f"train.grad_accum_steps ({t.grad_accum_steps}) must divide train.batch_size ({t.batch_size}); "
            "each micro-batch takes batch_size / grad_accum_steps streams"
        )
    if not any(v is not None for v in (t.max_steps, t.max_epochs, t.max_minutes, t.target_loss, t.patience)):
        problems.append(
            "train: no stop condition; set at least one of max_steps, max_epochs, max_minutes, target_loss, patience"
        )
    return problems


def _check_freeze_name(name: str) -> str | None:
    """None for a part train.freeze can name (embedding, rnn, rnn.N, output), else what is wrong."""
    if name in FREEZABLE or (name.startswith("rnn.") and name[4:].isdigit()):
        return None
    close = difflib.get_close_matches(name, [*FREEZABLE, "rnn.0"], n=1, cutoff=0.4)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return f"unknown part {name!r}{hint} (parts: embedding, rnn, rnn.N for layer N counted from 0, output)"


def _check_spelling(config: Config) -> list[str]:
    """model.spelling composes a word-level embedding table; where there is none to compose, say so."""
    m, problems = config.model, []
    if m.spelling and config.data.level != "word":
        problems.append(
            f"model.spelling needs data.level: word (got {config.data.level}; characters and subword pieces have "
            "no word spellings to share)"
        )
    if m.spelling and (m.input == "onehot" or m.embeddings_path or m.cell == "ngram"):
        problems.append(
            "model.spelling composes the embedding table from shared rows; it needs a recurrent cell, model.input: "
            "embedding and no model.embeddings_path (pre-trained vectors fill a table of one row per word)"
        )
    return problems


def recurrent_only(config: Config) -> dict[str, tuple[Any, Any]]:
    """Keys set away from their defaults that act on parts only a recurrent network has (an embedding table,
    hidden outputs, layers): {dotted key: (value, default)}. Cell hmm refuses them; plain sizes are ignored."""
    found = {}
    for section, names in RECURRENT_ONLY.items():
        values, defaults = getattr(config, section), SECTION_TYPES[section]()
        for name in names:
            if getattr(values, name) != getattr(defaults, name):
                found[f"{section}.{name}"] = (getattr(values, name), getattr(defaults, name))
    return found


def without_recurrent_only(config: Config) -> Config:
    """The config with every recurrent_only key at its default: an hmm run made from a recurrent config (compare)."""
    sections = {}
    for section, names in RECURRENT_ONLY.items():
        defaults = SECTION_TYPES[section]()
        sections[section] = dataclasses.replace(getattr(config, section), **{n: getattr(defaults, n) for n in names})
    return config.replace(**sections)


def _check_hmm(config: Config) -> list[str]:
    found = recurrent_only(config) if config.model.cell == "hmm" else {}
    if not found:
        return []
    shown = ", ".join(f"{key} ({json.dumps(_plain(value))})" for key, (value, _) in found.items())
    defaults = ", ".join(f"{key.split('.')[1]}: {json.dumps(_plain(default))}" for key, (_, default) in found.items())
    return [
        f"model.cell hmm: {shown} act on parts only the recurrent cells have (an embedding table, hidden outputs, "
        f"layers); remove them, or set them to their defaults ({defaults})"
    ]


def _check_input_and_output(m: ModelConfig) -> list[str]:
    """One-hot input has no embedding table to tie or fill; cutoffs must cut the vocabulary in order."""
    problems = []
    if m.input == "onehot" and m.tie_weights:
        problems.append(
            "model.tie_weights needs model.input: embedding (one-hot input has no embedding table to share)"
        )
    if m.input == "onehot" and m.embeddings_path:
        problems.append(
            "model.embeddings_path needs model.input: embedding (pre-trained vectors fill the embedding table)"
        )
    if m.input == "onehot" and m.embedding_dropout:
        problems.append("model.embedding_dropout needs model.input: embedding (one-hot input has no embedding table)")
    if m.embeddings_freeze and not m.embeddings_path:
        problems.append("model.embeddings_freeze needs model.embeddings_path (there is nothing pre-trained to keep)")
    if m.cache_size and m.cell == "ngram":
        problems.append("model.cache_size needs a recurrent cell (the cache matches hidden outputs; ngram has none)")
    cutoffs = m.adaptive_cutoffs
    if cutoffs is not None:
        if not cutoffs or cutoffs[0] < 1 or any(a >= b for a, b in zip(cutoffs, cutoffs[1:])):
            problems.append(
                f"model.adaptive_cutoffs must be increasing token ids of at least 1 (got {list(cutoffs)}), "
                "e.g. [2000, 10000]; or null to choose them from the vocabulary size"
            )
        elif m.output == "full":
            problems.append("model.adaptive_cutoffs is set but model.output is full; set output: adaptive or drop it")
    return problems


def from_dict(data: dict, origin: str = "the checkpoint") -> Config:
    """Rebuild a Config from its plain-dict form (checkpoints, saved run configs): no recipe fills in."""
    return build([(origin, data)], recipe=False)


# A run's saved config begins and ends with these lines; one that begins so but lacks the end was cut short.
SAVED_HEADER = "# Resolved rnngen config: every key, with the value this run used (it ends with an end line).\n"
SAVED_FOOTER = "# end of the resolved config\n"


def to_yaml(config: Config) -> str:
    import yaml

    return SAVED_HEADER + yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True) + SAVED_FOOTER


def reference() -> list[tuple[str, Any, str, str]]:
    """(dotted key, default, allowed values, help) for every key: docs/configuration.md is made from this."""
    rows = []
    for section in SECTIONS:
        hints = _hints(section)
        for f in dataclasses.fields(SECTION_TYPES[section]):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{section}.{f.name}", default, _allowed(hints[f.name], f.metadata), f.metadata["help"]))
    return rows


def _allowed(hint, meta) -> str:
    """What a key accepts, in the words its error messages use: type, then range."""
    bounds = [("min", "at least"), ("max", "at most"), ("above", "greater than"), ("below", "below")]
    ranges = [f"{words} {meta[name]}" for name, words in bounds if meta.get(name) is not None]
    return _describe(hint) + (", " + " and ".join(ranges) if ranges else "")

"""The command line: read options, call one library function, print the result.

stdout carries only results (text, tables, JSON); everything else goes to stderr. User
mistakes print one `Error:` line and exit 2; runtime failures exit 1; interruptions exit 130.
Heavy modules (torch) are imported inside the commands so `--help` and `--version` are instant.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

from rnngen import __version__, console
from rnngen.errors import TrainingFailed, UserError, WriteError

EXIT_INTERRUPTED = 130

set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.lr=0.001 (repeatable).",
)
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
precision_option = click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "int8"]),
    help="Weights of the one-token steps on the CPU (sample.precision): fp32, bf16 or int8 (docs/sampling.md).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="rnngen")
@click.option("-q", "--quiet", is_flag=True, help="Only results and errors; no progress or log lines.")
@click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(quiet: bool, verbose: bool, debug: bool) -> None:
    """Train recurrent language models (RNN, LSTM, GRU) on your text and write new text.

    \b
    Quick start:
      rnngen train                                  # train on the built-in demo corpus
      rnngen sample --seed "The " --length 200      # write text from the latest run
    \b
    Your own text:
      rnngen train --set data.path=mybook.txt --set train.out_dir=runs/mybook
      rnngen sample --run runs/mybook --seed Once --length 300 | less
    """
    console.set_verbosity(quiet=quiet, verbose=verbose)


# --------------------------------------------------------------------------- helpers


def _resolve(config_path, sets, flags, base=None):
    """Resolve the config; with no config file and no data path, the built-in demo settings lie under it."""
    from rnngen.config import resolve

    own_data = flags.get("data.path") or any(s.startswith("data.path=") for s in sets)
    defaults = None
    if config_path is None and base is None and not own_data:
        from rnngen.data.demo import DEMO_CONFIG

        defaults = DEMO_CONFIG
    return resolve(config_path, sets, flags, base=base, defaults=defaults)


def _echo(text: str) -> None:
    """Write a result to stdout now; if the reader has gone (`| head`), end quietly with exit 0."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)  # SystemExit passes through Click, which would turn the broken pipe into exit 1


# --------------------------------------------------------------------------- prepare


@cli.command()
@config_option
@click.argument("inputs", nargs=-1)
@click.option("--level", type=click.Choice(["char", "word", "subword"]), help="Token level (data.level).")
@click.option("--out", "out_dir", help="Prepared-data directory (data.prepared_dir).")
@click.option("--force", is_flag=True, help="Prepare again even if the prepared data is up to date.")
@set_option
def prepare(config_path, inputs, level, out_dir, force, sets):
    """Tokenize text, build the vocabulary and write token ids for training.

    INPUT may be files, globs, directories (all text files below) or - for stdin; without
    INPUT, data.path of the config is used (the built-in demo corpus if none).

    \b
    Example:
      rnngen prepare data/hunger_games.txt --level word --out prepared/hunger
    """
    from rnngen.data.prepare import describe
    from rnngen.data.prepare import prepare as run_prepare

    flags = {"data.path": list(inputs) or None, "data.level": level, "data.prepared_dir": out_dir}
    config = _resolve(config_path, sets, flags)
    _echo(describe(run_prepare(config, force=force)))


# --------------------------------------------------------------------------- train


@cli.command()
@config_option
@set_option
@click.option("--resume", is_flag=True, help="Continue the run in train.out_dir from its last.pt.")
@click.option("--overwrite", is_flag=True, help="Start over in a run directory that already holds a run.")
@click.option(
    "--init-from",
    metavar="CHECKPOINT_OR_RUN",
    help="Start a new run from this trained model's weights and vocabulary (train.init_from): fine-tuning.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where to train (train.device).")
def train(config_path, sets, resume, overwrite, init_from, device):
    """Train a model; checkpoints, metrics and samples go to train.out_dir.

    Without --config it trains on the built-in demo corpus. Ctrl-C saves last.pt and prints
    the command that resumes. Prints the path of the best checkpoint on stdout.

    \b
    Examples:
      rnngen train --config configs/hunger.yaml
      rnngen train --config configs/hunger.yaml --set train.max_minutes=30 --resume
      rnngen train --config small.yaml --init-from runs/big     # fine-tune runs/big on small.yaml's text
    """
    from rnngen.runs import RunPaths
    from rnngen.training.trainer import train as run_train

    if init_from and resume:
        raise UserError(
            "--init-from starts a new run from another model and --resume continues this run from its last.pt; "
            "give one of them (a fine-tuned run resumes with --resume alone)"
        )
    flags = {"train.device": device, "train.init_from": init_from}
    config = _resolve(config_path, sets, flags)

    def resolve_again(saved: dict):
        return _resolve(config_path, sets, flags, base=saved)

    result = run_train(config, resume=resume, overwrite=overwrite, resolve_again=resolve_again)
    if result.interrupted:
        again = ["rnngen", "train"] + (["--config", config_path] if config_path else [])
        again += ["--set", f"train.out_dir={result.run_dir}", "--resume"]
        console.warn(f"training interrupted at step {result.step}; resume with:\n  {shlex.join(again)}")
        sys.exit(EXIT_INTERRUPTED)
    paths = RunPaths(result.run_dir)
    _echo(f"{paths.checkpoint() or paths.last}\n")


# --------------------------------------------------------------------------- sample


def _load_model(checkpoint, run, config_path, sets, device):
    """The model of --checkpoint, --run, --config (its out_dir) or runs/LATEST, in that order; only one may be given."""
    from rnngen.api import load

    if checkpoint and run:
        raise click.UsageError("give only one of --checkpoint and --run")
    return load(run, device, checkpoint_file=checkpoint, config_path=config_path, sets=sets)


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint file to sample from.")
@click.option("--run", type=click.Path(), help="Run directory (uses its best.pt, else last.pt).")
@config_option
@set_option
@click.option("--seed", help="Seed text to start from (a word, several words, or - to read stdin).")
@click.option("--length", type=int, help="Tokens to generate after the seed.")
@click.option("--temperature", type=float, help="Softmax temperature; 0 = greedy.")
@click.option("--top-k", type=int, help="Draw only from the k most likely tokens.")
@click.option("--top-p", type=float, help="Nucleus sampling: smallest set with this probability.")
@click.option("--repetition-penalty", type=float, help="Penalise tokens already generated (1 = off).")
@click.option("--num-samples", type=int, help="Samples generated together in one batch.")
@click.option("--random-seed", type=int, help="Random seed for exactly repeatable output.")
@click.option("--stop", multiple=True, help="End a sample when this text appears (repeatable).")
@click.option("--max-time", type=float, help="Stop generating after this many seconds.")
@click.option(
    "--on-unknown", type=click.Choice(["error", "unk", "skip", "nearest"]), help="Seed tokens not in the vocabulary."
)
@click.option("--include-seed/--no-include-seed", default=None, help="Print the seed before the generated text.")
@click.option("--allow-unk", is_flag=True, help="Let samples contain <unk> (by default it is never drawn).")
@click.option("--separator", default="\n", show_default=repr("\n"), help="Printed between samples.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "jsonl"]),
    default="text",
    help="text, or one JSON object per sample.",
)
@click.option("--report-copying", is_flag=True, help="Report how much of each sample is copied from the training text.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", help="Where to run.")
@precision_option
def sample(checkpoint, run, config_path, sets, seed, length, temperature, top_k, top_p, repetition_penalty, num_samples,
           random_seed, stop, max_time, on_unknown, include_seed, allow_unk, separator, output_format, report_copying,
           device, precision):  # fmt: skip
    """Write new text from a trained model.

    Without --checkpoint, --run or --config it uses the latest training run (runs/LATEST).
    Defaults come from the checkpoint's sample: section, then --config, --set and the flags.

    \b
    Examples:
      rnngen sample --seed games --length 300
      rnngen sample --run runs/hunger --num-samples 5 --temperature 0.7 --stop "\\n"
      echo "Once upon" | rnngen sample --seed - --format jsonl | jq .text
    """
    if seed == "-":
        seed = sys.stdin.read().rstrip("\n")
    model = _load_model(checkpoint, run, config_path, sets, device)
    settings = model.sample_settings(
        config_path, sets, seed=seed, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, num_samples=num_samples, random_seed=random_seed,
        stop=list(stop) or None, max_time=max_time, on_unknown=on_unknown, include_seed=include_seed,
        allow_unk=allow_unk or None, precision=precision,
    )  # fmt: skip
    options = {k: v for k, v in vars(settings).items() if k not in ("seed", "on_unknown", "include_seed")}
    copy_index = None
    if report_copying:
        from rnngen.generate.memorisation import index_for

        copy_index = index_for(model)  # built (or loaded) before generating, so errors come first
    generation = model.generation_with(settings)
    show_seed = settings.include_seed and generation.samples[0].seed
    if output_format == "jsonl":
        for _ in generation:
            pass
        for number, s in enumerate(generation.samples, 1):
            record = {"seed": s.seed, "text": s.text, "tokens": s.tokens, "mean_logprob": round(s.mean_logprob, 6),
                      "stopped_by": s.stopped_by, "checkpoint": str(model.path), "settings": {**options, "seed": settings.seed}}  # fmt: skip
            if copy_index is not None:
                record["copying"] = _report_copying(copy_index, s, number)
            _echo(json.dumps(record, ensure_ascii=False) + "\n")
    elif settings.num_samples == 1:  # stream as it is generated
        if show_seed:
            _echo(generation.samples[0].seed)
        for pieces in generation:
            if pieces[0]:
                _echo(pieces[0])
        _echo("\n")
    else:
        for _ in generation:
            pass
        texts = [(s.seed if show_seed else "") + s.text + "\n" for s in generation.samples]
        _echo(separator.join(texts))
    if copy_index is not None and output_format == "text":
        for number, s in enumerate(generation.samples, 1):
            _report_copying(copy_index, s, number)


def _report_copying(copy_index, sample, number: int) -> dict:
    """Measure one sample against the training text and say so on stderr."""
    copying = copy_index.measure(sample.ids)
    console.info(
        f"sample {number}: longest span copied from the training text: {copying.longest_span} tokens; "
        f"{copying.window_share:.0%} of its {copying.windows} 8-token windows occur in the training text"
    )
    return copying.to_dict()


# --------------------------------------------------------------------------- evaluate


@cli.command()
@click.option(
    "--checkpoint", "checkpoints", multiple=True, type=click.Path(), help="Checkpoint or run directory (repeatable)."
)
@click.option(
    "--data", "data_path", help="Text file to score, or - for stdin (default: each model's validation split)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Parallel streams the text is folded into (1 = one pass in order, exact; more = faster).")  # fmt: skip
@click.option("--cache/--no-cache", "use_cache", default=True, show_default=True,
              help="Score with the model's cache pointer when it has one (model.cache_size); --no-cache: the network alone.")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
def evaluate(checkpoints, data_path, as_json, batch_size, use_cache, device):
    """Loss, perplexity and bits per character of one or more checkpoints.

    "bpc open" is open-vocabulary bits per character: each <unk> also pays for its spelling, so word,
    subword and character models compare honestly (docs/word-level.md). Best (lowest) first.

    \b
    Examples:
      rnngen evaluate --checkpoint runs/hunger/best.pt
      rnngen evaluate --checkpoint runs/a --checkpoint runs/b --data holdout.txt --json
    """
    from rnngen.api import load

    text = _read_eval_text(data_path) if data_path else None
    rows = []
    for item in checkpoints or (None,):  # none given: the latest run
        model = load(item, device)
        if text is None:
            ids, chars, unknown = model.validation_ids()
        else:
            ids, chars, unknown = model.encode_text(text)
        scores = model.evaluate_ids(ids, chars, unknown, batch_size, use_cache)
        unk = sum(unknown.values())
        rows.append({"checkpoint": str(model.path), **scores.to_dict(), "unk_tokens": unk,
                     "oov_rate": unk / max(len(ids) - 1, 1)})  # fmt: skip
    rows.sort(key=lambda r: r["bpc_open"])
    if as_json:
        _echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2) + "\n")
        return
    header = f"{'checkpoint':<40} {'tokens':>10} {'loss':>8} {'ppl':>10} {'bpc':>7} {'bpc open':>8} {'oov':>7}\n"
    lines = [
        f"{r['checkpoint']:<40} {r['tokens']:>10,} {r['loss']:>8.4f} {r['perplexity']:>10.2f} {r['bpc']:>7.4f} "
        f"{r['bpc_open']:>8.4f} {r['oov_rate']:>7.2%}\n"
        for r in rows
    ]
    _echo(header + "".join(lines))


def _read_eval_text(data_path: str) -> str:
    from rnngen.data.sources import expand, read_text

    return "".join(chunk for source in expand([data_path]) for chunk in read_text(source))


# --------------------------------------------------------------------------- info


@cli.command()
@click.argument("target", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(target, as_json):
    """Summary of a checkpoint or run directory: level, vocabulary, model, training, config."""
    from rnngen.api import load

    details = load(target).info()
    if as_json:
        _echo(json.dumps(details, indent=2, ensure_ascii=False) + "\n")
        return
    import yaml

    config = details.pop("config")
    details["unk_rate"] = _unk_rate(details.pop("unk_tokens"), details["unk_rate"])
    lines = [f"{key:<18} {'-' if value is None else value}" for key, value in details.items()]
    _echo("\n".join(lines) + "\nconfig:\n" + _indent(yaml.safe_dump(config, sort_keys=False, allow_unicode=True)))


def _unk_rate(unk_tokens: int | None, rate: float | None) -> str:
    """The share of <unk> in the training text, or "unknown" for data prepared before it was recorded."""
    if rate is None:
        return "unknown"
    return f"{rate:.2%} ({unk_tokens:,} <unk> tokens in the training text)"


def _indent(text: str) -> str:
    return "".join("  " + line for line in text.splitlines(keepends=True))


# --------------------------------------------------------------------------- diagnose


@cli.command()
@click.argument("targets", nargs=-1, required=True, type=click.Path(), metavar="CHECKPOINT_OR_RUN...")
@click.option(
    "--data", "data_path", help="Text file to measure on, or - for stdin (default: each model's validation split)."
)
@click.option(
    "--steps", type=click.IntRange(min=3), default=64, show_default=True, help="Time steps to run back through."
)
@click.option("--init", "with_init", is_flag=True, help="Also measure the same architecture at its initial weights.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Draw gradient norm against distance to FILE.png (.svg, .pdf).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
def diagnose(targets, data_path, steps, with_init, as_json, plot_path, device):
    """Vanishing or exploding gradients: how much of the last step's loss reaches each earlier hidden state.

    Runs --steps time steps over windows of text and prints, per layer, the norm of
    d loss(last step) / d h_t against the distance back in time, with the measured decay rate.
    Several checkpoints or run directories are compared side by side.

    \b
    Examples:
      rnngen diagnose runs/demo --init
      rnngen diagnose runs/rnn runs/lstm runs/gru --plot gradients.png
    """
    from rnngen.analysis.diagnose import format_report, gradient_profile
    from rnngen.api import load

    if plot_path:  # before the measuring, which takes a while
        from rnngen.analysis.plot import picture_format, require_matplotlib

        require_matplotlib()
        picture_format(plot_path)
    text = _read_eval_text(data_path) if data_path else None
    profiles = []
    for target in targets:
        model = load(target, device)
        ids = (model.validation_ids() if text is None else model.encode_text(text))[0]
        profiles.append(gradient_profile(model, ids, steps))
        if with_init:
            profiles.append(gradient_profile(model, ids, steps, fresh=True, seed=model.config.train.seed))
    if plot_path:
        from rnngen.analysis.plot import plot_gradient_profiles

        console.info(f"wrote {plot_gradient_profiles(profiles, plot_path)}")
    if as_json:
        rows = [p.to_dict() for p in profiles]
        _echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2) + "\n")
    else:
        _echo(format_report(profiles))


# --------------------------------------------------------------------------- states


@cli.command()
@click.argument("target", type=click.Path(), metavar="CHECKPOINT_OR_RUN")
@click.option("--text", help="Text whose tokens get their most likely states.")
@click.option("--data", "data_path", help="Text file whose tokens get their most likely states, or - for stdin.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Most likely tokens per state.")
@click.option("--on-unknown", type=click.Choice(["error", "unk"]), default="error", show_default=True,
              help="Tokens of the text not in the vocabulary: an error, or read as <unk>.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="cpu", show_default=True,
              help="Where to run; Viterbi takes one token at a time, which suits the CPU best.")  # fmt: skip
def states(target, text, data_path, top, on_unknown, as_json, device):
    """The hidden states of an HMM (model.cell hmm): each token's state on the most likely path, and each
    state's most likely tokens.

    With --text or --data, every token of the text gets its state on the Viterbi path, and the states
    it uses are listed with their tokens; without, every state is listed.

    \b
    Examples:
      rnngen states runs/hmm --text "the cat sat on the mat."
      rnngen states runs/hmm --top 5 --json | jq '.by_state[0]'
    """
    from rnngen.analysis.hmm_states import render, states_report
    from rnngen.api import load

    if text is not None and data_path:
        raise click.UsageError("give only one of --text and --data")
    if data_path:
        text = _read_eval_text(data_path)
    report = states_report(load(target, device), text, top, on_unknown)
    _echo(json.dumps(report, indent=2, ensure_ascii=False) + "\n" if as_json else render(report))


# --------------------------------------------------------------------------- plot


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(), metavar="RUN_DIR...")
@click.option(
    "-o",
    "--output",
    default="training.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Picture to write (.png, .svg or .pdf).",
)
@click.option(
    "--x",
    "x_axis",
    type=click.Choice(["step", "time"]),
    default="step",
    show_default=True,
    help="Horizontal axis: steps or training minutes.",
)
def plot(run_dirs, output, x_axis):
    """Training and validation loss of one or more runs, overlaid, with their gradient norms.

    Reads each run's metrics.csv; prints the path of the picture.

    \b
    Example:
      rnngen plot runs/rnn runs/lstm runs/gru -o training.png --x time
    """
    from rnngen.analysis.plot import plot_training, read_run, require_matplotlib, run_names

    require_matplotlib()
    runs = [read_run(d, name) for d, name in zip(run_dirs, run_names(list(run_dirs)))]
    _echo(f"{plot_training(runs, output, x_axis)}\n")


# --------------------------------------------------------------------------- compare


@cli.command()
@config_option
@set_option
@click.option("--models", "model_specs", multiple=True, metavar="SPEC[,SPEC...]",
              help="Models to compare: rnn, lstm, gru, ngram:N, hmm:K or a checkpoint/run path (repeatable, or "
                   "comma-separated). Default: ngram:2,ngram:3,ngram:5,rnn,lstm,gru.")  # fmt: skip
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True),
              help="Training time of each neural model (default: train.max_minutes, else 5).")  # fmt: skip
@click.option(
    "--format", "output_format", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where to train and run (train.device)."
)
def compare(config_path, sets, model_specs, budget_minutes, output_format, device):
    """Markov models (n-gram, HMM) against RNN, LSTM and GRU on the same text: one table.

    Trains every model on the config's prepared data (the neural ones at the config's model
    size, each for the same time budget) into <train.out_dir>/compare/<model>, replacing an
    earlier comparison there, then prints size, memory, training time, seconds per epoch, cost
    per token, validation loss, perplexity, bits per character, sampling speed and a sample of each.

    \b
    Examples:
      rnngen compare --config configs/shakespeare_char.yaml --budget-minutes 5
      rnngen compare --models ngram:3,ngram:7,lstm --budget-minutes 2 --format csv
      rnngen compare --models hmm:64,hmm:256,ngram:5,lstm --set data.level=word
      rnngen compare --models runs/hunger --models ngram:3 --config configs/hunger.yaml
    """
    from rnngen.analysis.compare import DEFAULT_SPECS, parse_specs, render
    from rnngen.analysis.compare import compare as run_compare

    config = _resolve(config_path, sets, {"train.device": device})
    rows = run_compare(config, parse_specs(model_specs or DEFAULT_SPECS), budget_minutes)
    _echo(render(rows, output_format))


# --------------------------------------------------------------------------- serve


@cli.command()
@click.option("--checkpoint", type=click.Path(), help="Checkpoint file to serve.")
@click.option("--run", type=click.Path(), help="Run directory (uses its best.pt, else last.pt).")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--max-length", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most tokens a request may generate per sample (and the longest seed).")  # fmt: skip
@click.option("--max-samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most samples (num_samples) per request.")  # fmt: skip
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most samples generated together in one batch, over all requests.")  # fmt: skip
@click.option("--queue-size", type=click.IntRange(min=0), default=64, show_default=True,
              help="Requests that may wait while the batch is full; beyond that the answer is 503.")  # fmt: skip
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds a request may take, waiting included; beyond that the answer is 504.")  # fmt: skip
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", help="Where to run.")
@precision_option
@click.pass_context
def serve(ctx, checkpoint, run, config_path, host, port, max_length, max_samples, max_batch, queue_size, time_limit,
          device, precision):  # fmt: skip
    """An HTTP API and a page in the browser for one trained model.

    POST /v1/generate takes the options of `rnngen sample` as JSON and returns the samples
    (or streams tokens as Server-Sent Events); GET /v1/model describes the model; GET / is a
    page that shows the text and the probabilities of the next token as it is written.
    Requests that arrive together are generated together in one batch.
    Without --checkpoint, --run or --config it serves the latest training run (runs/LATEST).

    \b
    Examples:
      rnngen serve --run runs/demo
      curl -s localhost:8000/v1/generate -d '{"seed": "The ", "length": 100}'
    """
    from rnngen.serve.app import run as run_server
    from rnngen.serve.service import Limits, Service, require_server_stack

    require_server_stack()
    model = _load_model(checkpoint, run, config_path, (), device)
    defaults = model.sample_settings(config_path, precision=precision)
    limits = Limits(max_length, max_samples, max_batch, queue_size, time_limit)
    verbose = ctx.find_root().params.get("verbose", False)
    run_server(Service(model, limits, defaults), host, port, verbose)


# --------------------------------------------------------------------------- export


@cli.command("export")
@click.argument("target", type=click.Path(), metavar="CHECKPOINT_OR_RUN")
@click.option("--format", "fmt", default="onnx", show_default=True, help="What to write: onnx.")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Directory to write (new or empty).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --out.")
def export_model(target, fmt, out_dir, overwrite):
    """Write a trained model for programs without rnngen: an ONNX graph of one step, and its vocabulary as JSON.

    The graph takes token ids and the state and returns the next-token scores and the new state,
    for any batch size; DIR/model.json holds the vocabulary, the tokenizer's rules and the
    sampling defaults. docs/export.md samples from it with onnxruntime alone. Prints the paths written.

    \b
    Example:
      rnngen export runs/demo --format onnx --out exported/demo
    """
    from rnngen.api import load
    from rnngen.export.onnx import export

    paths = export(load(target), out_dir, fmt, overwrite)
    _echo("".join(f"{path}\n" for path in paths))


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning errors into one clean line and the right exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="rnngen", standalone_mode=False)
        _flush_stdout()
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (UserError, TrainingFailed, WriteError) as e:
        if debug:
            raise
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if debug:
            raise
        print(f"Error: unexpected {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """The reader went away (e.g. `| head`): point stdout at /dev/null so exit is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())

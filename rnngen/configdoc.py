"""Write docs/configuration.md, the configuration reference, from the config dataclasses.

    python -m rnngen.configdoc > docs/configuration.md      # or: make docs

Keys, defaults, allowed values and help all come from rnngen/config.py, so the page cannot
drift from the code; a test fails when the committed page differs from this output.
"""

from __future__ import annotations

import json

from rnngen.config import SECTIONS, reference

REGENERATE = "python -m rnngen.configdoc > docs/configuration.md"

INTRO = """\
# Configuration

One YAML file with four sections: `data` (what to read and how to cut it into tokens), `model`,
`train` and `sample`. Precedence: built-in defaults < config file < `--set section.key=value`
(repeatable, parsed as YAML) < explicit flags. The fully resolved config is written to the
run directory (`config.yaml`) and stored inside every checkpoint.

Mistakes are refused before any work starts, all at once, with exit code 2:

    $ rnngen train --config mine.yaml
    Error: unknown key `train.learning_rate` in mine.yaml; did you mean `train.lr`?
    $ rnngen train --set model.dropout=1.5
    Error: model.dropout: must be at least 0 and below 1 (got 1.5, from --set)

Ready configs in `configs/`: `demo.yaml` (the built-in demo), `tiny.yaml` (seconds-long smoke
run), `hunger.yaml` (word level, a novel-sized corpus you supply), `shakespeare_char.yaml`
(character level, tuned for 5 minutes on 2 CPU cores). Each opens with its purpose and command.

`data.path` accepts a file, a glob, a directory or a list of them; `null` means the built-in
demo corpus. `train.max_steps`, `max_epochs`, `max_minutes`, `target_loss` and `patience` may
be combined: training stops at the first one reached (at least one must be set).

## Reference
"""

SECTION_TITLES = {
    "data": "what to read and how to cut it into tokens",
    "model": "the network",
    "train": "the training run",
    "sample": "defaults of `rnngen sample` and of the samples written while training",
}


def _yaml(value) -> str:
    """A default as it would be written in the YAML file."""
    if isinstance(value, tuple):
        value = list(value)
    if value is None or isinstance(value, (bool, list)):
        return json.dumps(value)
    return str(value)


def _cell(text: str) -> str:
    """Table-safe text: `<unk>` would otherwise vanish as an HTML tag, `|` would split the cell."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def render() -> str:
    lines = [INTRO, f"<!-- Generated from rnngen/config.py by `{REGENERATE}`; do not edit by hand. -->"]
    rows = reference()
    for section in SECTIONS:
        lines += ["", f"### {section}: {SECTION_TITLES[section]}", ""]
        lines += ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        for key, default, allowed, help_text in rows:
            if key.split(".", 1)[0] == section:
                lines.append(f"| `{key}` | `{_yaml(default)}` | {_cell(allowed)} | {_cell(help_text)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")

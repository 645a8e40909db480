"""Everything that is not a result goes to stderr: log lines, warnings and progress bars."""

from __future__ import annotations

import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2
_verbosity = NORMAL


def set_verbosity(quiet: bool = False, verbose: bool = False) -> None:
    global _verbosity
    _verbosity = QUIET if quiet else VERBOSE if verbose else NORMAL


def quiet_unless_verbose() -> None:
    """For the helper processes of a DDP run: only rank 0 talks, unless --verbose was given."""
    global _verbosity
    if _verbosity < VERBOSE:
        _verbosity = QUIET


def _write(message: str) -> None:
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:  # keeps an active progress bar intact
        tqdm_module.tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def info(message: str) -> None:
    """Progress and status chatter; silenced by --quiet."""
    if _verbosity >= NORMAL:
        _write(message)


def detail(message: str) -> None:
    """Extra detail shown with --verbose."""
    if _verbosity >= VERBOSE:
        _write(message)


def warn(message: str) -> None:
    """Something the user should know even with --quiet."""
    _write(f"Warning: {message}")


def bars_enabled() -> bool:
    """Progress bars only on an interactive stderr and never with --quiet."""
    return _verbosity >= NORMAL and sys.stderr.isatty()


def progress(**kwargs):
    """A tqdm bar on stderr that disappears when stderr is not a terminal or with --quiet."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=not bars_enabled(), dynamic_ncols=True, **kwargs)

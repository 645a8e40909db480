"""A newcomer's set-up: the Makefile on a Python that refuses system-wide installs (PEP 668),
a non-editable `pip install .`, and shell completion.

Nothing is downloaded: the packages the tests already run with are made visible to the new
environments (PYTHONPATH, or a .pth file), so pip finds every requirement installed and only
rnngen itself is built and installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", ".ruff_cache", "build",
    "dist", "out", ".make-installed", "*.pt",
)  # fmt: skip
PROBE = (
    "import json, os, sys, sysconfig; print(json.dumps([sys.prefix == sys.base_prefix, "
    "os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')), list(sys.version_info[:2])]))"
)


@pytest.fixture
def packages(tmp_path) -> Path:
    """The running interpreter's packages (torch, click, pytest, ...) in one directory, without rnngen.

    An installed rnngen is left out: an editable install's finder module has the same name in
    every environment, so if it were visible it would point the new environment at this checkout.
    """
    shadow = tmp_path / "packages"
    shadow.mkdir()
    for directory in dict.fromkeys(sysconfig.get_path(name) for name in ("purelib", "platlib")):
        for entry in Path(directory).iterdir():
            if not entry.name.startswith(("rnngen", "__editable__")) and not (shadow / entry.name).exists():
                (shadow / entry.name).symlink_to(entry)
    return shadow


def externally_managed_python() -> Path | None:
    """A Python outside any virtual environment, marked EXTERNALLY-MANAGED, of this Python's version."""
    for candidate in (Path("/usr/bin/python3"), Path(sys.base_prefix) / "bin" / "python3"):
        if not candidate.exists():
            continue
        probe = subprocess.run([str(candidate), "-c", PROBE], capture_output=True, text=True)
        if probe.returncode == 0 and json.loads(probe.stdout) == [True, True, list(sys.version_info[:2])]:
            return candidate
    return None


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new shell with no virtual environment active."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHON", "PYTHONHOME")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def make(cwd: Path, *args: str, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    """A fresh top-level make, also when the tests themselves run under `make test` (no MAKEFLAGS passed down)."""
    env = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    command = ["make", "--no-print-directory", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the project, as a fresh clone would have it."""
    return Path(shutil.copytree(ROOT, tmp_path / "clone", ignore=COPY_IGNORE))


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@needs_make
def test_make_installs_into_a_project_venv_when_the_system_python_refuses(checkout, packages):
    system = externally_managed_python()
    if system is None:
        pytest.skip("no externally managed (PEP 668) system Python of this version on this machine")
    path = f"{system.parent}:{Path(shutil.which('make')).parent}:/usr/bin:/bin"
    env = clean_env(PATH=path, PYTHONPATH=str(packages), PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0")
    refused = subprocess.run([str(system), "-m", "pip", "install", "rnngen"], env=env, capture_output=True, text=True)
    if "No module named pip" not in refused.stderr:  # this Python really refuses system-wide installs
        assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr + refused.stdout

    done = make(checkout, "test", "TESTS=tests/test_tokens.py", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "creating .venv" in done.stderr and " passed" in done.stdout
    venv_python = checkout / ".venv" / "bin" / "python"
    where = subprocess.run([str(venv_python), "-c", "import rnngen, sys; print(rnngen.__file__); print(sys.prefix)"],
                           cwd=checkout.parent, env=env, capture_output=True, text=True)  # fmt: skip
    module, prefix = where.stdout.split()
    assert Path(module).is_relative_to(checkout) and Path(prefix) == checkout / ".venv"  # editable, in .venv
    version = subprocess.run([str(checkout / ".venv" / "bin" / "rnngen"), "--version"], env=env, capture_output=True)
    assert version.returncode == 0 and b"rnngen" in version.stdout

    again = make(checkout, "print-python", env=env)  # installed once: no second install
    assert again.stdout.strip() == ".venv/bin/python" and "pip install" not in again.stdout
    assert make(checkout, "clean", env=env).returncode == 0 and venv_python.exists()
    assert make(checkout, "distclean", env=env).returncode == 0 and not (checkout / ".venv").exists()


@needs_make
def test_make_uses_an_active_virtual_environment(checkout):
    env_dir = checkout.parent / "active"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    env = clean_env(PATH=f"{env_dir / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(env_dir))
    plan = make(checkout, "-n", "install", env=env)  # -n: print the commands without running them
    assert plan.returncode == 0, plan.stderr
    assert "python3 -m pip install -e" in plan.stdout and ".venv" not in plan.stdout
    explicit = make(checkout, "-n", "install", f"PYTHON={env_dir / 'bin' / 'python'}", env=clean_env())
    assert f"{env_dir / 'bin' / 'python'} -m pip install -e" in explicit.stdout and ".venv" not in explicit.stdout


@needs_make
def test_make_says_how_to_fix_a_python_without_venv(checkout):
    # Debian's python3 without the python3-venv package fails at `-m venv`; this stand-in does too.
    fake = checkout.parent / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\nif [ "$1 $2" = "-m venv" ]; then echo "ensurepip is not available" >&2; exit 1; fi\n'
        f'exec {sys.base_prefix}/bin/python3 "$@"\n'
    )
    fake.chmod(0o755)
    if subprocess.run([str(fake), "-c", "import sys; sys.exit(sys.prefix != sys.base_prefix)"]).returncode:
        pytest.skip("the base Python of this interpreter is itself a virtual environment")
    done = make(checkout, "install", env=clean_env(PATH=f"{fake.parent}:{os.environ['PATH']}"))
    assert done.returncode != 0
    assert "sudo apt install python3-venv" in done.stderr and not (checkout / ".venv").exists()


def test_non_editable_install_runs_from_another_directory(tmp_path, packages):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "rnngen", source / "rnngen", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "packages.pth").write_text(f"{packages}\n")  # torch, click, pip, setuptools: nothing to download
    env = clean_env()
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              str(source)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    shutil.rmtree(source)  # nothing may depend on the source tree any more

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def rnngen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "rnngen"), *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    where = subprocess.run([str(python), "-c", "import rnngen; print(rnngen.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(purelib)
    helped = rnngen("--help")
    assert helped.returncode == 0 and "sample" in helped.stdout and "train" in helped.stdout
    short = {"train.max_steps": 2, "train.eval_every": 2, "train.sample_length": 0, "model.hidden_size": 32}
    trained = rnngen("-q", "train", *(f"--set={k}={v}" for k, v in short.items()))  # the built-in demo corpus
    assert trained.returncode == 0, trained.stderr
    checkpoint = Path(elsewhere, trained.stdout.strip())
    assert checkpoint.exists()
    info = rnngen("info", str(checkpoint))
    assert info.returncode == 0 and "vocab_size" in info.stdout and "hidden_size        32" in info.stdout, info.stderr
    sampled = rnngen("sample", "--length", "20")
    assert sampled.returncode == 0 and sampled.stdout.startswith("The "), sampled.stderr


def test_shell_completion_lists_the_commands():
    def complete(words: str, cword: int) -> list[str]:
        env = clean_env(_RNNGEN_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword),
                        PYTHONPATH=str(ROOT))  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "rnngen"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line.split(",", 1)[1] for line in done.stdout.splitlines()]

    commands = complete("rnngen ", 1)
    assert {"prepare", "train", "sample", "evaluate", "info", "compare", "diagnose", "plot"} <= set(commands)
    assert "--allow-unk" in complete("rnngen sample --al", 2)
    for shell in ("bash", "zsh", "fish"):
        script = subprocess.run([sys.executable, "-m", "rnngen"], env=clean_env(_RNNGEN_COMPLETE=f"{shell}_source",
                                PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)  # fmt: skip
        assert script.returncode == 0 and "_RNNGEN_COMPLETE" in script.stdout

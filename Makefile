# rnngen developer tasks. `make test` and `make demo` install what they need first.
#
# Where things go: inside an active virtual environment (venv, virtualenv, uv, conda) the
# package is installed into it. Otherwise a project-local .venv is created with `python3 -m venv`
# and everything runs through .venv/bin/python, so the system Python is never touched (Debian and
# Ubuntu refuse such installs anyway, PEP 668). Override the interpreter with PYTHON=...
PYTHON ?= python3
VENV := .venv
# Extra `python -m venv` options, e.g. VENV_ARGS=--system-site-packages to reuse a torch installed
# for the system Python.
VENV_ARGS ?=
# The CPU build of torch, installed only where no torch is importable; a torch you installed
# yourself (a CUDA build, say) is kept.
TORCH_SPEC ?= torch==2.13.0
# What `make test` runs, e.g. `make test TESTS=tests/test_sample.py`.
TESTS ?= tests

# 1 when $(PYTHON) belongs to a virtual or conda environment other than this project's .venv.
IN_ENV := $(shell $(PYTHON) -c 'import os, sys; p = os.path.realpath(sys.prefix); print(int(p != os.path.realpath("$(VENV)") and (sys.prefix != sys.base_prefix or os.path.isdir(os.path.join(p, "conda-meta")))))' 2>/dev/null)
ifeq ($(IN_ENV),1)
PY := $(PYTHON)
STAMP := .make-installed
else
PY := $(VENV)/bin/python
STAMP := $(VENV)/.make-installed
endif

.PHONY: install test demo bench lint docs print-python clean distclean

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
	  echo "Error: rnngen needs Python 3.10 or newer as $(PYTHON) (found: $$($(PYTHON) --version 2>&1))." >&2; exit 1; }
	@echo "creating $(VENV) with $(PYTHON) -m venv (no virtual environment is active)" >&2
	@$(PYTHON) -m venv $(VENV_ARGS) $(VENV) || { rm -rf $(VENV); \
	  echo "Error: '$(PYTHON) -m venv $(VENV)' failed. On Debian/Ubuntu install the venv module" \
	       "(sudo apt install python3-venv) and run make again, or activate a virtual environment first." >&2; exit 1; }

$(STAMP): pyproject.toml | $(if $(filter 1,$(IN_ENV)),,$(VENV)/bin/python)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev,plot,serve,export]"
	@touch $(STAMP)
	@echo "installed rnngen into $$($(PY) -c 'import sys; print(sys.prefix)')" >&2

install: $(STAMP)

# The interpreter every target uses (after installing).
print-python: $(STAMP)
	@echo $(PY)

test: $(STAMP)
	$(PY) -m pytest $(TESTS)

demo: $(STAMP)
	$(PY) -m rnngen train --overwrite
	@echo "--- a sample from the demo model:" >&2
	$(PY) -m rnngen sample --run runs/demo --length 400

bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check rnngen tests bench
	$(PY) -m ruff format --check rnngen tests bench

# Regenerate docs/configuration.md from the config dataclasses (tests fail when it is stale).
docs: $(STAMP)
	$(PY) -m rnngen.configdoc > docs/configuration.md.tmp && mv docs/configuration.md.tmp docs/configuration.md

# Leaves .venv alone; distclean removes it too.
clean:
	rm -rf runs bench/out .pytest_cache .make-installed

distclean: clean
	rm -rf $(VENV)

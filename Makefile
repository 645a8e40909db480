# rnngen developer tasks. `make test` and `make demo` install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch; GPU users install their own torch first and it is kept.
TORCH_SPEC ?= torch==2.13.0
STAMP := .make-installed

.PHONY: install test demo bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev,plot,serve]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest tests

demo: $(STAMP)
	$(PYTHON) -m rnngen train --overwrite
	@echo "--- a sample from the demo model:" >&2
	$(PYTHON) -m rnngen sample --run runs/demo --length 400

bench: $(STAMP)
	$(PYTHON) bench/run_all.py

lint: $(STAMP)
	$(PYTHON) -m ruff check rnngen tests bench
	$(PYTHON) -m ruff format --check rnngen tests bench

clean:
	rm -rf runs bench/out .pytest_cache $(STAMP)

# geostudy: set-up and checks. `make demo` and `make test` work on a fresh clone.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DGLBACKEND := pytorch
export MPLBACKEND := Agg

.PHONY: install demo test lint browser bench bench-quick clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes. torch stays pinned to the CPU build on this disk.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python optuna_hyper.py --study labeling_quick

lint: install
	$(BIN)/ruff check geostudy tests bench run.py optuna_hyper.py
	$(BIN)/mypy

# Headless Chromium + driver for the browser tests, from Debian's packages (needs root, as CI has).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: could not install chromium; the browser tests will be skipped"; \
	else echo "warning: chromium missing and not root; the browser tests will be skipped"; fi

test: install browser lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

bench: install
	$(BIN)/python bench/run.py all

bench-quick: install
	$(BIN)/python bench/run.py all --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

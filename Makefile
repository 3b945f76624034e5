# The two set-up commands: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv on a fresh machine: torch==2.13.0 first (a CPU build from local disk),
# then geodyn with its extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint docs bench bench-peers clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m geodyn reproduce --suite demo --out geodyn-demo --force

test: $(VENV)/.installed lint
	$(PY) -m pytest -q -n 2
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -q

lint: $(VENV)/.installed
	$(PY) -m ruff check geodyn tests benchmarks examples
	$(PY) -m mypy geodyn

bench: $(VENV)/.installed
	$(PY) -m benchmarks.run

# Every peer of the benchmark, NVIDIA emerging-optimizers included, needs Python >= 3.12:
# a second environment .venv312 (PYTHON312=/path/to/python3.12 where it is not on PATH).
PYTHON312 ?= python3.12
VENV312 := .venv312

$(VENV312)/.installed: pyproject.toml
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install -q --upgrade pip
	$(VENV312)/bin/python -m pip install -q torch==2.13.0
	$(VENV312)/bin/python -m pip install -q -e '.[bench]'
	touch $@

bench-peers: $(VENV312)/.installed
	$(VENV312)/bin/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV312) site .pytest_cache .hypothesis

# cifar10-transfer: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Passed through to `python -m cifar10_transfer reproduce|train`.
PROFILE ?= seed
OUT ?= .
DATA ?= cifar10
DATA_DIR ?=
WEIGHTS ?= imagenet
SET ?=
CURVES_FROM ?=
RUN_FLAGS = --profile $(PROFILE) --out $(OUT) --data $(DATA) --weights $(WEIGHTS) \
	$(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(foreach kv,$(SET),--set $(kv)) $(if $(RESUME),--resume) \
	$(if $(STRICT),--strict)

.PHONY: help install test test-slow test-all reproduce train report predict data-check bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the pinned requirements, the package and its Jupyter kernel

# uv installs the pinned wheels in seconds from its cache, where pip took 45-90 s on a 2-core
# machine. Bytecode is compiled at install, so that no process recompiles TensorFlow's modules
# where PYTHONDONTWRITEBYTECODE is set.
UV_VERSION := 0.13.9

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install --quiet --no-deps --python $(PY) -e .
	$(PY) -m ipykernel install --sys-prefix --name cifar10-transfer --display-name "Python (cifar10-transfer)" >/dev/null
	touch $(STAMP)

# Two test targets, split by pytest markers (registered in pyproject.toml): `make test` runs every
# test not marked `slow` or `bench`, `make test-slow` exactly those, so together they run each test
# once. TESTS narrows either to files or node ids (TESTS=tests/test_cli.py); a narrowed run that
# selects nothing passes, while a whole-suite target that selects nothing (pytest's exit code 5)
# fails, as a marker mistake would otherwise pass unseen.
SLOW_TESTS := slow or bench
TESTS ?=
PYTEST = $(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=15

define run_pytest
	$(PYTEST) -m "$(1)" $(TESTS); status=$$?; \
	if [ $$status -eq 5 ] && [ -n "$(strip $(TESTS))" ]; then \
	  echo "no test in $(TESTS) is selected by -m \"$(1)\""; status=0; fi; exit $$status
endef

test: install ## unit tests + one real-data smoke run: pytest -m "not (slow or bench)"; CIFAR10_DIR: real data
	$(call run_pytest,not ($(SLOW_TESTS)))

test-slow: install ## long end-to-end runs and bench.py runs: pytest -m "slow or bench"
	$(call run_pytest,$(SLOW_TESTS))

test-all: test test-slow ## both, one after the other (as .ci/run does)

reproduce: install ## run the notebooks and regenerate figures, results, deck and README (CURVES_FROM=json: keep those curves)
	$(PY) -m cifar10_transfer reproduce $(RUN_FLAGS) $(if $(CURVES_FROM),--curves-from $(CURVES_FROM))

train: install ## train and evaluate only, writing OUT/results/results.json
	$(PY) -m cifar10_transfer train $(RUN_FLAGS)

report: install ## re-render the results figures, deck and README table from results/results.json
	$(PY) -m cifar10_transfer report --out $(OUT)

predict: install ## classify IMAGES (files or folders) with the run in OUT; MODEL=stage (default: best)
	$(PY) -m cifar10_transfer predict --run $(OUT) $(if $(MODEL),--model $(MODEL)) $(IMAGES)

data-check: install ## print per-split, per-class counts of the data
	$(PY) -m cifar10_transfer data check --data $(DATA) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench: install ## measure speed and memory (DATA, DATA_DIR); writes benchmarks/results/latest.json
	$(PY) benchmarks/bench.py --data $(DATA) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

clean: ## remove .venv and ./.runs: interrupted runs, the feature cache and kept curve stages (hours of work)
	rm -rf $(VENV) .runs

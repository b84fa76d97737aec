# daif developer commands. `make install` then `make test` is all a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Pins torch to the CPU build available here; GPU users: `make install CONSTRAINTS=`.
CONSTRAINTS ?= constraints-cpu.txt
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
EXTRAS ?= dev,sweep,video,bench,wandb
ARGS ?= env=cartpole

.PHONY: install test lint format train tensorboard bench clean

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_CONSTRAINTS) -e '.[$(EXTRAS)]'

test:
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

train:
	$(PY) train.py $(ARGS)

tensorboard:
	$(VENV)/bin/tensorboard --logdir runs

bench:
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f; done

clean:
	rm -rf runs outputs multirun .pytest_cache .ruff_cache

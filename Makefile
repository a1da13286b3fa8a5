# Every target installs what it needs: a virtualenv in .venv built from setup.cfg.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SEEDS ?= 2000

.PHONY: test lint bench run clean venv sim

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,lint]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The randomized Raft simulation alone; `make sim SEEDS=100000` for a long sweep.
sim: $(STAMP)
	SEEDS=$(SEEDS) $(PY) -m pytest -q tests/sim -k random --timeout=0

# The bench extra brings the baselines measured beside coterie (PySyncObj) and matplotlib.
bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench

run: $(STAMP)
	$(PY) -m examples.cluster_demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis

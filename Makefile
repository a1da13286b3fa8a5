# Every target installs what it needs: a virtualenv in .venv built from setup.cfg.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SEEDS ?= 2000
RUNS ?= 5
JEPSEN_SECONDS ?= 20

.PHONY: test lint bench run clean venv sim sim-membership jepsen nettools

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,lint]'
	@touch $(STAMP)

test: $(STAMP) nettools
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The randomized Raft simulation alone; `make sim SEEDS=100000` for a long sweep.
sim: $(STAMP)
	SEEDS=$(SEEDS) $(PY) -m pytest -q tests/sim -k random --timeout=0

# Rapid membership at scale (2,000 to 10,000 simulated members): JSON and a PNG of cluster size
# over time in bench/results; `make sim-membership SCALE=0.1` for a quick look.
SCALE ?= 1.0
sim-membership: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m membership.rapid.scenarios --scale $(SCALE)

# The bench extra brings the baselines measured beside coterie (PySyncObj) and matplotlib.
bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(PY) -m bench

# Nemesis runs put each node in a network namespace and cut links with iptables (root only;
# without root or the tools those tests skip and say why). Installs iptables if it is missing.
nettools:
	@if [ "$$(id -u)" = 0 ] && ! command -v iptables-restore >/dev/null 2>&1; then \
		echo "installing iptables for the nemesis runs"; \
		apt-get install -y -q iptables iproute2 >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q iptables iproute2 >/dev/null; }; \
	fi

# Seeded nemesis runs against a 5-node cluster; `make jepsen RUNS=50` for a long one.
jepsen: $(STAMP) nettools
	$(PY) -m tests.jepsen.run --runs $(RUNS) --seconds $(JEPSEN_SECONDS)

run: $(STAMP)
	$(PY) -m examples.cluster_demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis

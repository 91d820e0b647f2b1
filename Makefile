# dpgen_ng: `make demo` and `make test` do all set-up on a fresh Debian 12 machine (as root),
# then run. Both are idempotent and quick once set up.
SHELL      := /bin/bash
PYTHON     ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
APT_PKGS   := python3-venv xtb cp2k quantum-espresso quantum-espresso-data slurmctld slurmd slurm-client munge openssh-server procps chromium
DEMO_DIR   ?= demo-run
PYTEST_ARGS ?=
# two pytest workers (pytest-xdist): many tests wait on a Python start-up or a poll while the other
# core is idle. loadscope keeps each module on one worker (its module-scoped runs are made once);
# the workers share the test Slurm + sshd (tests/conftest.py stops them when the last one leaves)
TEST_WORKERS ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup apt venv demo demo-cu test lint bench bench-data bench-training bench-selection bench-scale bench-remote clean

all: test

setup: apt venv

# Debian packages: installed only when one is missing (dpkg -s is fast).
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The Python stack, pinned in pyproject.toml (re-installed when it changes).
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m dpgen_ng.launcher $(VENV)/bin/lmp
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR) && cp examples/methane/* $(DEMO_DIR)/
	cd $(DEMO_DIR) && dpgen init_bulk init.json machine.json
	cd $(DEMO_DIR) && dpgen init_bulk valid.json machine.json -w valid
	cd $(DEMO_DIR) && time dpgen run param.json machine.json
	cd $(DEMO_DIR) && dpgen report

# fcc Cu: init_bulk (relax, perturb, AIMD with EMT), two iterations labeled with EMT, then
# `dpgen test` of the final model against EMT (EOS, elastic constants, vacancy, surfaces)
demo-cu: setup
	rm -rf $(DEMO_DIR)-cu && mkdir -p $(DEMO_DIR)-cu && cp -r examples/cu/* $(DEMO_DIR)-cu/
	cd $(DEMO_DIR)-cu && dpgen init_bulk init.json machine.json
	cd $(DEMO_DIR)-cu && time dpgen run param.json machine.json
	cd $(DEMO_DIR)-cu && time dpgen test test.json machine.json

test: setup
	$(VENV)/bin/ruff check dpgen_ng tests bench
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check dpgen_ng tests bench

# issue 14's four figures (~8 min): one methane iteration, selection over 10^7 deviation rows,
# our own time per task in a 2000 + 2000-task iteration, bytes brought back from an SSH machine
bench: setup
	$(PY) bench/iteration.py
	$(PY) bench/selection.py
	$(PY) bench/scale.py
	$(PY) bench/remote.py

bench-data: setup
	$(PY) bench/data_efficiency.py

# training from earlier models vs from scratch; seconds per step of each backend (~25 min)
bench-training: setup
	$(PY) bench/training.py

# model_devi.out files (10^7 rows in 100 files) into the selection table: the former reader vs the
# streaming one, time and peak memory (~1 min, most of it the former reader)
bench-selection: setup
	$(PY) bench/selection.py

# 200 and 2000 MD + as many fp tasks with stand-in engines: our own ms per task, peak memory, status
bench-scale: setup
	$(PY) bench/scale.py

# exploration on a loopback sshd: trajectory bytes kept there vs bytes brought back
bench-remote: setup
	$(PY) bench/remote.py

clean:
	rm -rf $(DEMO_DIR) build .pytest_cache .ruff_cache

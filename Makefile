# optbench — the usual HPC entry points. `make setup` once, then `make quickstart` or `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel here; on a GPU cluster: make setup TORCH=torch==2.13.0 (gets the CUDA wheel)
TORCH ?= torch==2.13.0+cpu
STUDY_DIR ?= runs/quickstart

.PHONY: setup quickstart test test-unit bench chaos crossover-small cluster-up cluster-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg requirements/base.txt requirements/offline-data.txt requirements/test.txt requirements/no-deps.txt requirements/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/offline-data.txt -r requirements/test.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements/no-deps.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The main job: plan the quickstart study, train it on this machine (one process per core), report.
quickstart: setup
	$(VENV)/bin/optbench plan jobs/quickstart.toml -o $(STUDY_DIR)
	$(VENV)/bin/optbench submit $(STUDY_DIR) --executor local
	$(VENV)/bin/optbench report $(STUDY_DIR)

# The test command (CI runs exactly this): real local Slurm cluster up, whole pytest suite, cluster down.
test: setup
	bash slurm/test.sh

# Fast tests only, no cluster (the Slurm tests skip with a reason unless CI=true).
test-unit: setup
	$(VENV)/bin/pytest -q -m "not slurm" tests

# Throughput benchmarks (minutes; README "Performance"): per-run speed of optbench's loop vs the bare and
# naive loops, concurrent runs per device, and plan/submit/status at the full study's scale.
bench: setup
	$(VENV)/bin/optbench bench --problems quadratic_deep digits_mlp mnist1d_mlp shakespeare_char_rnn uniform_tokens_lm zipf_tokens_lm --repeats 5 --fit-batch 0.125
	$(PY) benchmarks/bench_parallel.py --runs 64 --rounds 2
	$(PY) benchmarks/bench_machinery.py plan submit status

# A short chaos run on the local cluster (slurm/chaos.py --help for the long version).
chaos: setup
	SLURM_ACCOUNTING=1 bash slurm/cluster-up.sh
	source /tmp/optbench-slurm/env.sh && $(PY) slurm/chaos.py --minutes 10; rc=$$?; bash slurm/cluster-down.sh; exit $$rc

# The Adam–SGD crossover study scaled down for 2 CPU cores (issue 7; README records what it shows).
crossover-small: setup
	$(VENV)/bin/optbench plan jobs/crossover_small.toml -o runs/crossover_small
	$(VENV)/bin/optbench submit runs/crossover_small --executor local
	$(VENV)/bin/optbench report runs/crossover_small

cluster-up:
	SLURM_ACCOUNTING=1 bash slurm/cluster-up.sh

cluster-down:
	bash slurm/cluster-down.sh

clean:
	rm -rf runs/quickstart

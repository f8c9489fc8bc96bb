# optbench — the usual HPC entry points. `make setup` once, then `make quickstart` or `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel here; on a GPU cluster: make setup TORCH=torch==2.13.0 (gets the CUDA wheel)
TORCH ?= torch==2.13.0+cpu
STUDY_DIR ?= runs/quickstart

.PHONY: setup quickstart test test-unit bench chaos cluster-up cluster-down clean

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

cluster-up:
	SLURM_ACCOUNTING=1 bash slurm/cluster-up.sh

cluster-down:
	bash slurm/cluster-down.sh

clean:
	rm -rf runs/quickstart

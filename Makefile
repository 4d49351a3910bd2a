# Every target creates or reuses .venv with the pinned dependencies, so on a fresh clone
# `make analyze DATA=...` and `make test` are the only commands a user types.
# The caller's environment (TORCH_HOME, CUDA_VISIBLE_DEVICES, ...) passes through untouched.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed

DATA    ?=
OUT     ?=
WEIGHTS ?=
CONFIG  ?=
ARGS    ?=
REPORT_ARGS ?=
NPROC   ?=
IMAGE   ?=
LAYERS  ?=
RUN     ?= $(OUT)

# NPROC=N: N processes on this machine through torchrun, one shard each: one GPU each (more processes than GPUs is
# refused unless ARGS="--set share_gpus=true"), or CPU processes on a machine without a GPU.
EXTRACT = $(if $(NPROC),$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m jobs.extract,$(BIN)/python -m jobs.extract)

# Job flags from make variables; quoted so that paths with spaces survive.
JOB_FLAGS = $(if $(DATA),--data="$(DATA)") $(if $(OUT),--out="$(OUT)") \
            $(if $(WEIGHTS),--weights="$(WEIGHTS)") $(if $(CONFIG),--config="$(CONFIG)")

.DEFAULT_GOAL := help
.PHONY: help setup analyze extract report concepts demo finalize inspect test test-fast lint bench bench-gpu bench-gpu-system

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: DATA=<folder or .zip> OUT=<dir> WEIGHTS=imagenet|random|<file> CONFIG=<yaml> NPROC=<processes>"
	@echo "             ARGS=\"<flags>\": the target's job; make analyze gives them to the extract, and its --no-progress to the report too"
	@echo "             REPORT_ARGS=\"<flags>\": make analyze's report (e.g. --layers conv5_3 --no-overlays)"
	@echo "             RUN=<the OUT of a run> (report, concepts, finalize: default OUT; inspect: compared with it)  IMAGE=<file> LAYERS=<names> (inspect)"

setup: $(DEV_STAMP) ## Create .venv and install the pinned dependencies (runtime and tests)

$(RUNTIME_STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

analyze: $(RUNTIME_STAMP) ## Extract activations of DATA into Parquet, then write the report (OUT defaults to runs/<name>)
	$(EXTRACT) $(JOB_FLAGS) $(ARGS)
	$(BIN)/python -m jobs.report --run="$$($(BIN)/python -m jobs.extract --print-out $(JOB_FLAGS) $(ARGS))" \
	  $(if $(CONFIG),--config="$(CONFIG)") $(filter --no-progress,$(ARGS)) $(REPORT_ARGS)

extract: $(RUNTIME_STAMP) ## The extract stage alone: DATA -> OUT/predictions, OUT/activations[_max]/<layer>
	$(EXTRACT) $(JOB_FLAGS) $(ARGS)

report: $(RUNTIME_STAMP) ## Channel rankings, concepts, every channel's top images and the HTML page of a finished run (RUN=OUT)
	$(if $(RUN),,$(error RUN is required: make report RUN=runs/<name>, the OUT of make analyze or make extract))
	$(BIN)/python -m jobs.report --run="$(RUN)" $(if $(CONFIG),--config="$(CONFIG)") $(ARGS)

concepts: $(RUNTIME_STAMP) ## Each class as a few concepts (NMF of conv5_3) and every image's share of them (RUN=OUT)
	$(if $(RUN),,$(error RUN is required: make concepts RUN=runs/<name>, the OUT of make analyze or make extract))
	$(BIN)/python -m jobs.concepts --run="$(RUN)" $(if $(CONFIG),--config="$(CONFIG)") $(ARGS)

demo: $(RUNTIME_STAMP) ## A first run: synthetic cats and dogs -> extract -> report on the CPU; prints where the page is
	$(BIN)/python -m jobs.demo $(if $(OUT),--out="$(OUT)") $(if $(CONFIG),--config="$(CONFIG)") $(ARGS)

finalize: $(RUNTIME_STAMP) ## Mark a sharded run complete once all its units are done (RUN=OUT); says what is missing
	$(if $(RUN),,$(error RUN is required: make finalize RUN=runs/<name>, the OUT of the sharded extract))
	$(BIN)/python -m jobs.finalize --run="$(RUN)"

inspect: $(RUNTIME_STAMP) ## One image step by step: a convolution, the answer, feature maps (IMAGE=, LAYERS=, RUN=)
	$(BIN)/python -m jobs.inspect $(if $(IMAGE),--image="$(IMAGE)") $(if $(OUT),--out="$(OUT)") \
	  $(if $(WEIGHTS),--weights="$(WEIGHTS)") $(if $(LAYERS),--layers="$(LAYERS)") \
	  $(if $(filter command line environment,$(origin RUN)),--run="$(RUN)") $(if $(CONFIG),--config="$(CONFIG)") $(ARGS)

# One test file per worker at a time: a file's module fixtures, and conftest's session ones, are built once per worker.
# (--dist loadgroup would group files that share a run, but with pytest 9.2 it silently groups nothing: xdist #1386.)
XDIST := -n auto --maxprocesses 4 --dist loadfile

test: $(DEV_STAMP) ## Run the test suite (CPU, no network, data made by the tests; ARGS="-n 0": one process)
	$(BIN)/python -m pytest -q $(XDIST) $(ARGS)

test-fast: $(DEV_STAMP) ## The tests that run no job end to end (-m "not slow"), for quick feedback; ARGS as for test
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow" $(ARGS)

lint: $(DEV_STAMP) ## ruff's linter and formatter check, as pyproject.toml configures them (the suite runs them too)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(DEV_STAMP) ## Benchmarks: extract vs bare forward and per part; report stage, page, dataset checks and concepts at scale
	$(BIN)/python -m benchmarks.bench_extract
	$(BIN)/python -m benchmarks.bench_extract --precision bf16 --images 384
	$(BIN)/python -m benchmarks.profile_extract
	$(BIN)/python -m benchmarks.bench_reductions --compiled
	$(BIN)/python -m benchmarks.bench_input
	$(BIN)/python -m benchmarks.bench_report
	$(BIN)/python -m benchmarks.bench_report --images 25000
	$(BIN)/python -m benchmarks.bench_pages
	$(BIN)/python -m benchmarks.bench_checks
	$(BIN)/python -m benchmarks.measure_phash
	$(BIN)/python -m benchmarks.bench_scale
	$(BIN)/python -m benchmarks.bench_concepts

bench-gpu: $(DEV_STAMP) ## On a GPU machine, once (<8 min): forward, DataLoader, whole extract, CPU vs GPU, torchrun
	$(BIN)/python -m benchmarks.bench_gpu $(ARGS)

# No .venv, no install, no network: the GPU machine's own Python and its torch, torchvision, numpy, pandas, ...
bench-gpu-system: ## bench-gpu with the machine's own python3 and packages: no .venv, no install, no network
	PYTHONPATH=. $(PYTHON) -m benchmarks.bench_gpu $(ARGS)

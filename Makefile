# sailyard — the two commands a new user needs are `make demo` and `make test`.
# Both create .venv/ (reused afterwards) from requirements.lock, then run.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.sailyard-installed
WORK ?= work
CLUSTER_DIR := .cluster
# The CPU build of torch 2.13.0 lies on disk on our machines; elsewhere PyTorch's CPU index has it.
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: venv demo test ui cluster-up cluster-down lint clean bench-dedup bench-lid bench-curation bench-clean lock

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock scripts/spark-tool-wrapper scripts/install-spark-wrappers
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	# The lock is the whole set: install exactly it (--no-deps), nothing resolved again.
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --no-deps $(TORCH_SOURCE) -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	# New files renamed into place, never written through uv's hard links into its cache.
	scripts/install-spark-wrappers $(VENV)
	touch $@

# Re-resolve requirements.lock after changing pyproject.toml (NeMo's known-good set as constraints).
lock:
	$(BIN)/uv pip compile pyproject.toml --extra data --extra train --extra eval --extra dev \
	  -c constraints/nemo-cpu.txt --override constraints/overrides.txt --python-version 3.11.7 \
	  $(TORCH_SOURCE) --no-header --no-annotate -o requirements.lock

demo: venv
	$(BIN)/sailyard demo --config configs/demo.yaml --work-dir $(WORK)

test: venv
	$(BIN)/python -m pytest

ui: venv
	$(BIN)/sailyard ui --work-dir $(WORK)

# A standalone Spark cluster on this machine (Master + one Worker, loopback only), for
# `spark-submit --master spark://127.0.0.1:7077 jobs/...`. `make cluster-up CLUSTER_PRIVATE_DIR=D`
# hides what the executors write under D from the driver: a cluster without a shared disk (root only).
cluster-up: venv
	$(BIN)/python -m data_engine.cluster up --dir $(CLUSTER_DIR)$(if $(CLUSTER_PRIVATE_DIR), --private-dir $(CLUSTER_PRIVATE_DIR))

cluster-down:
	$(BIN)/python -m data_engine.cluster down --dir $(CLUSTER_DIR)

# Near-dedup benchmark: sailyard's jobs beside datatrove, text-dedup and rensa on one generated
# web-like corpus (bench/corpus.py), 25k and 100k documents. The peers get their own venv (they need
# numpy 2). text-dedup 0.4.0 is the newest release on PyPI (0.4.1 is not published there).
PEERS := bench/.venv-peers
$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet "datatrove[processing]==0.10.1" text-dedup==0.4.0 rensa==0.5.0 spacy orjson psutil
	touch $@

bench-dedup: venv $(PEERS)/.installed
	$(BIN)/python bench/dedup.py --docs 25000,100000 --peers-python $(PEERS)/bin/python

# Language identification accuracy per language on the shipped real text.
bench-lid: venv
	$(BIN)/python bench/lid.py

# Clean, quality training and scoring throughput on web-like pages.
bench-curation: venv
	$(BIN)/python bench/curation.py

# The cleaning rules' keep rate on real text and removal rate on web junk, per language.
bench-clean: venv
	$(BIN)/python bench/clean_real_text.py

lint: venv
	$(BIN)/ruff check data_engine jobs trainer eval tests bench

clean:
	rm -rf $(WORK) $(CLUSTER_DIR) .pytest_cache

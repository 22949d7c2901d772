# covfefe-flow: `make help` lists the targets. Every target installs what it needs.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.covfefe-installed
SERVE_INSTALLED := $(VENV)/.covfefe-serve-installed
# Where `make demo` listens: empty means covfefe serve's own choice (COVFEFE_BIND, else
# 127.0.0.1:8000); `make demo HOST=0.0.0.0 PORT=8080` overrides either.
HOST ?=
PORT ?=
# uv resolves the lock (make lock); installs use pip with the exported, hashed requirements.
UV_VERSION := 0.13.9
UV_VENV := .cache/uv-$(UV_VERSION)
UV := $(UV_VENV)/bin/uv

.PHONY: help install install-serve demo collect train evaluate update mlflow bench test test-fast lint lock notebooks-clear clean system-packages

help: ## List the targets
	@echo "covfefe-flow: make TARGET"
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The locked versions (requirements/*.txt, exported from uv.lock with their hashes), then
# covfefe itself, editable, without resolving anything again. uv installs them, compiled to
# bytecode as pip does (a minute where pip takes three); it reads no pip.conf:
# UV_DEFAULT_INDEX=URL names a mirror. `python -m venv` keeps pip in the venv for the user's own.
UV_PIP = $(UV) pip install --quiet --require-hashes --compile-bytecode --python
$(INSTALLED): pyproject.toml requirements/dev.txt | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(UV_PIP) $(BIN)/python -r requirements/dev.txt
	$(UV) pip install --quiet --no-deps --python $(BIN)/python -e .
	touch $@

install: $(INSTALLED) ## Create .venv with covfefe and every extra, at the versions of uv.lock

# The generator's kernels are compiled here, once (numba caches them beside the code), so that
# the server's first start does not spend about half a minute of CPU on them.
$(SERVE_INSTALLED): pyproject.toml requirements/serve.txt | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(UV_PIP) $(BIN)/python -r requirements/serve.txt
	$(UV) pip install --quiet --no-deps --python $(BIN)/python -e .
	@echo "compiling the generator's kernels (once: about half a minute of CPU)"
	$(BIN)/python -c "import serve; serve.create_app()"
	touch $@

install-serve: $(SERVE_INSTALLED) ## Create .venv with only what serving needs (the serve extra, locked)

demo: install-serve ## Serve the bundled model and the web page on localhost:8000 (HOST=, PORT= to change)
	$(BIN)/covfefe serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

$(UV):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet uv==$(UV_VERSION)

lock: $(UV) ## Resolve pyproject.toml again into uv.lock and requirements/*.txt (UPGRADE=1: newest releases)
	$(UV) lock $(if $(UPGRADE),--upgrade)
	for extra in serve notebooks dev; do \
	  $(UV) export --frozen --extra $$extra --no-emit-project --format requirements-txt \
	    --output-file requirements/$$extra.txt >/dev/null; \
	done
	$(UV) pip compile requirements/mlflow-server.in --generate-hashes --universal \
	  --python-version 3.11 --no-header --quiet $(if $(UPGRADE),--upgrade) \
	  --output-file requirements/mlflow-server.txt

collect: install ## Import the archive (COVFEFE_ARCHIVE) into data/tweets.parquet
	$(BIN)/covfefe collect --archive

PARAMS ?= full
train: install ## Collect, explore, train, evaluate: each notebook of notebooks/params/$(PARAMS)/ into runs/$(PARAMS)-<time>/
	$(BIN)/python -m covfefe.notebooks $(PARAMS)

evaluate: install ## Bits/char of the bundled model (COVFEFE_MODEL) and a 9-gram baseline on its validation tweets
	$(BIN)/covfefe evaluate --baseline-order 9

UPDATE_SOURCE ?= --archive
update: install ## The loop: collect new tweets (UPDATE_SOURCE), update, compare, promote if it wins (PIDFILE: reload that server)
	$(BIN)/covfefe collect $(UPDATE_SOURCE) --no-progress
	$(BIN)/covfefe update --promote --no-progress $(if $(PIDFILE),--reload $(PIDFILE))

# The MLflow tracking server and UI: full mlflow in a venv of its own (it pins gunicorn<27), from
# its own hashed lock (requirements/mlflow-server.txt, as deploy/mlflow/Dockerfile).
MLFLOW_SERVER := .cache/mlflow-server/bin/mlflow
$(MLFLOW_SERVER): requirements/mlflow-server.txt | $(UV)
	$(PYTHON) -m venv .cache/mlflow-server
	$(UV_PIP) .cache/mlflow-server/bin/python --only-binary :all: -r requirements/mlflow-server.txt
	touch $@

MLFLOW_PORT ?= 5000
mlflow: $(MLFLOW_SERVER) ## Open the MLflow UI on http://127.0.0.1:$(MLFLOW_PORT)/ over the local store (runs, registered models)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(MLFLOW_SERVER) ui --backend-store-uri sqlite:///$(abspath data)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

bench: install ## Training throughput and memory: our pipeline vs the v1 one-hot windows (bench/)
	$(BIN)/python bench/train_pipeline.py

# axe-core (accessibility rules) for the browser tests, from the npm registry, pinned.
AXE_VERSION := 4.14.1
AXE_JS := .cache/axe/node_modules/axe-core/axe.min.js
$(AXE_JS):
	mkdir -p .cache/axe
	cd .cache/axe && npm install --no-save --no-audit --no-fund --silent axe-core@$(AXE_VERSION)

system-packages: ## Install the Debian packages the tests need (.ci/apt-packages.txt; root or sudo)
	.ci/system-packages.sh

# The tests run shellcheck and hadolint themselves (tests/test_deploy_*.py) and every notebook
# once, through plain papermill with the ci profile (tests/test_notebooks.py).
test: system-packages install $(AXE_JS) $(MLFLOW_SERVER) ## Run every test: lint, unit, CLI, HTTP, browser, deploy, notebooks
	$(BIN)/ruff check covfefe serve tests bench deploy
	$(BIN)/pytest $(PARALLEL) tests

# pytest-xdist workers (WORKERS=1: one process, as plain `pytest` runs); a module goes whole to one
# worker, slowest modules first (tests/conftest.py).
WORKERS ?= 2
PARALLEL := $(if $(filter-out 1,$(WORKERS)),-n $(WORKERS) --dist loadgroup --no-loadscope-reorder)

# The markers come from tests/conftest.py (SLOW_MODULES) and the test modules (network).
FAST_TESTS := not docker and not browser and not notebooks and not install and not slow and not network
test-fast: install ## The inner loop: no Docker, browser, notebooks, installs, servers or minutes-long runs
	$(BIN)/ruff check covfefe serve tests bench deploy
	$(BIN)/pytest $(PARALLEL) -m '$(FAST_TESTS)' tests

lint: install ## Lint the Python (ruff), the deploy scripts (shellcheck), the Dockerfiles (hadolint)
	$(BIN)/ruff check covfefe serve tests bench deploy
	shellcheck $$(find deploy -name '*.sh')
	$(BIN)/hadolint Dockerfile.* deploy/*/Dockerfile

notebooks-clear: install ## Clear the outputs of the source notebooks before committing
	$(BIN)/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean: ## Remove the virtual environment and caches (keeps data/ and runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

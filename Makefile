# Every install step lives here: a fresh clone and CI run exactly these targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS := .local/models
# The router's hot path compiled with mypyc (setup_compiled.py): selected with
# PYTHONSAFEPATH=1 PYTHONPATH=build/compiled, never next to the sources.
COMPILED := build/compiled

.PHONY: local test test-slow setup down clean compiled locks

# First README command: install what the local stack needs, train the sample model,
# start the local stack (router + scorers on loopback) and score a real request.
local: $(BIN)/.installed-local $(MODELS)/sklearn-iris/2/model.pkl
	$(BIN)/python -m components local up stacks/Pulumi.local.yaml
	$(BIN)/python -m components local score stacks/Pulumi.local.yaml

# Second README command: the test suite (slow load and soak runs: make test-slow).
# The router and its server run again compiled, as the router image ships them.
# Three files at a time (pytest-xdist): most tests wait on live servers, so even 2 cores run them
# in under half the time (four at a time starved timing-bound tests now and then); a file stays on one worker.
PARALLEL := -n 3 --dist loadfile
test: $(BIN)/.installed node_modules/.bin/azurite-blob $(COMPILED)/.built
	$(BIN)/python -m pytest -q $(PARALLEL)
	PYTHONSAFEPATH=1 PYTHONPATH=$(COMPILED) $(BIN)/python -m pytest -q $(PARALLEL) tests/router tests/http_server tests/router_k8s

test-slow: $(BIN)/.installed node_modules/.bin/azurite-blob
	$(BIN)/python -m pytest -q -m slow

compiled: $(COMPILED)/.built

# What the images install, pinned with every file's hash, for any Python from 3.11 (a custom base's too):
# run after changing a dependency in pyproject.toml (tests/components/test_locks.py says when).
locks:
	test -x build/uv/bin/uv || ($(PY) -m venv build/uv && build/uv/bin/pip install -q uv)
	build/uv/bin/uv pip compile pyproject.toml --extra router --generate-hashes --universal --python-version 3.11 --no-header --no-annotate -q -o router_image/requirements.txt
	build/uv/bin/uv pip compile pyproject.toml --extra scorer --extra sklearn --generate-hashes --universal --python-version 3.11 --no-header --no-annotate -q -o scoring_image/requirements.txt

# Rebuilt when any module the compiled ones are type-checked against changes.
$(COMPILED)/.built: setup_compiled.py pyproject.toml $(wildcard http_server/*.py router_image/*.py) | $(BIN)/.installed
	rm -rf $(COMPILED)
	$(BIN)/python setup_compiled.py -q build_ext --build-lib $(COMPILED) --build-temp build/mypyc/temp --with-sources
	touch $@

down:
	$(BIN)/python -m components local down stacks/Pulumi.local.yaml

# Everything Python (plan and `pulumi up` need the infra extra); the tests add the blob emulator (npm).
setup: $(BIN)/.installed

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BIN)/.installed-local: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[router,scorer,sklearn]'
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[infra,router,scorer,sklearn,dev]'
	touch $@ $(BIN)/.installed-local

# The sample model, two versions (the local endpoint's control and treatment).
$(MODELS)/sklearn-iris/2/model.pkl: examples/sklearn/train.py | $(BIN)/.installed-local
	$(BIN)/python examples/sklearn/train.py --out $(MODELS) --version 1
	$(BIN)/python examples/sklearn/train.py --out $(MODELS) --version 2

node_modules/.bin/azurite-blob: package.json
	npm install --no-audit --no-fund --silent
	touch $@

# The local stack first: its pid and state are under .local, and nothing could stop it once they are gone.
clean:
	-test ! -x $(BIN)/python || $(BIN)/python -m components local down stacks/Pulumi.local.yaml
	rm -rf $(VENV) node_modules .local

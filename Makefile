# Every install step lives here: CI and a fresh clone run exactly these targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: local test test-slow setup down clean

# First README command: install, train the sample model, start the local stack, score one request.
local: $(BIN)/.installed
	$(BIN)/python -m components local up stacks/Pulumi.local.yaml
	$(BIN)/python -m components local score stacks/Pulumi.local.yaml

# Second README command: the test suite (slow load/soak runs excluded: `make test-slow`).
test: $(BIN)/.installed node_modules/.bin/azurite-blob
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/.installed node_modules/.bin/azurite-blob
	$(BIN)/python -m pytest -q -m slow

down:
	$(BIN)/python -m components local down stacks/Pulumi.local.yaml

setup: $(BIN)/.installed node_modules/.bin/azurite-blob

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[infra,router,scorer,dev]'
	touch $@

node_modules/.bin/azurite-blob: package.json
	npm install --no-audit --no-fund --silent
	touch $@

clean:
	rm -rf $(VENV) node_modules .local

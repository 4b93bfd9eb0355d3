# HelloWord Remote Support — the two commands: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test quick lint typecheck unit schema bench clean

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required (set PY=python3.11)")'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tests/demo.py

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

# lint, types and every test but the end-to-end ones (real processes on loopback): ~2 min
quick: lint typecheck $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

schema: $(STAMP)
	$(BIN)/python docs/make_schema.py --write

bench: $(STAMP)
	$(BIN)/python bench/probes.py
	$(BIN)/python bench/rtt.py
	$(BIN)/python bench/tunnel.py
	$(BIN)/python bench/agents.py --agents 200
	$(BIN)/python bench/revoke.py
	$(BIN)/python bench/flood.py
	$(BIN)/python bench/requests.py
	$(BIN)/python bench/recording_flood.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# ombridge — `make run` and `make test` set up everything on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test soak bench check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## the bridge on the bundled example, in the foreground (the repository is the home)
run: $(STAMP)
	$(BIN)/ombridge --home . try -

## the test suite (bounded; the long soak/chaos runs are `make soak`)
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/run.py

check: $(STAMP)
	$(BIN)/ombridge --home . check

clean:
	rm -rf $(VENV) tmp datafiles log run .pytest_cache

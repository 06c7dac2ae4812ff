# ombridge — `make run` and `make test` set up everything on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two install steps: `make run` installs what running the bridge needs, `make test` adds the test
# extras (pytest, Playwright and the rest) on top. Each stamp is redone when pyproject.toml changes.
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat
# Test processes: most of a test waits for perl, the supervisor or a browser, so 4 fit 2 cores
# (make test: 2m54s with 4, 5m58s with 1; 3m44s with 4 beside a busy loop taking one core).
TEST_WORKERS ?= 4

.PHONY: run test test-stores soak chaos bench check clean bytecode chromium postgresql faketime

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) -e '.[test]'
	touch $(TEST_STAMP)

# Bytecode is compiled here because PYTHONDONTWRITEBYTECODE may be set (it is on CI): without
# .pyc files every `ombridge send` would compile the package from source.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q bridge

## the bridge on the bundled example, in the foreground (the repository is the home)
run: bytecode
	$(BIN)/ombridge --home . start --foreground

## Debian's Chromium for the console's browser tests (Playwright cannot download browsers here;
## through sudo when not root)
chromium:
	@test -x /usr/bin/chromium || { as=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$as apt-get update && $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

## Debian's PostgreSQL server for the store tests, which start their own in a temporary directory
## (tests/pg_support.py). Debian's own cluster is not wanted: create_main_cluster is turned off
## before the server package is installed, so no cluster is created and no service started.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { as=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$as apt-get update && $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-common && \
		$$as sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' \
			/etc/postgresql-common/createcluster.conf && \
		$$as env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }

## Debian's faketime: the clock tests run a real node whose clock is off (tests/test_silent_loss.py)
faketime:
	@command -v faketime >/dev/null || { as=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$as apt-get update && $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y faketime; }

## the test suite (bounded; the long soak/chaos runs are `make soak`)
test: bytecode $(TEST_STAMP) chromium postgresql faketime
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

## the full store matrix: the PostgreSQL half of the event-core, delivery and CLI tests marked
## all_stores (make test runs their SQLite half and a bounded set, marked both_stores, on both)
test-stores: bytecode $(TEST_STAMP) postgresql
	OMBRIDGE_TEST_STORES=all $(BIN)/python -m pytest -q -m "all_stores and not slow" -k postgresql \
		-n $(TEST_WORKERS) --dist loadgroup

## the long runs: slow tests (chaos and load soaks), then RSS over 1,000,000 closes
soak: bytecode $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/python bench/soak_rss.py

## the full chaos suite: 20 trials x 10,000 events, SIGKILLs at random instants
chaos: bytecode $(TEST_STAMP)
	$(BIN)/python tests/chaos.py --trials 20 --events 10000
	$(BIN)/python tests/chaos.py --trials 20 --events 10000 --children 4

bench: bytecode postgresql
	$(BIN)/python bench/run.py

check: bytecode
	$(BIN)/ombridge --home . check

clean:
	rm -rf $(VENV) tmp datafiles log run .pytest_cache

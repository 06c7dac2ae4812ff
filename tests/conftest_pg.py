"""Fixtures of a real PostgreSQL server (tests/pg_support.py), one per pytest-xdist worker.

Loaded by ``tests/pg/conftest.py``; the tests that will run against both stores load it the same
way (or through ``pytest_plugins`` in the top-level conftest).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pg_support import PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The worker's PostgreSQL server, started on first use and stopped (its directory removed) at
    the end of the session, even when tests failed."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[str]:
    """The name of a new empty database owned by the ``ombridge`` role, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg_conn(pg_server: PgServer, pg_db: str) -> Iterator[object]:
    """An autocommit psycopg connection to :func:`pg_db` as the ``ombridge`` role."""
    conn = pg_server.connect(pg_db, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


# -- the event core on either store -------------------------------------------------------------
# A test that takes `store_kind` (the `conn` fixture does) runs on the home's SQLite file, and
# also on PostgreSQL when it is marked `both_stores`, or `all_stores` with OMBRIDGE_TEST_STORES=all
# (`make test-stores`): the full matrix stays out of `make test`'s time.
STORES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests marked so on both stores (see above)."""
    if "store_kind" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker("both_stores") is not None or (
        os.environ.get("OMBRIDGE_TEST_STORES") == "all"
        and metafunc.definition.get_closest_marker("all_stores") is not None)
    if marked and metafunc.definition.get_closest_marker("sqlite_only") is None:
        metafunc.parametrize("store_kind", STORES, indirect=True)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which store the test's homes use: "sqlite" (their own file, the default) or "postgresql"
    (a new database of the worker's server, named by OMBRIDGE_STORE, which every `ombridge` the
    test starts inherits, with PGPASSFILE for the password)."""
    kind = getattr(request, "param", "sqlite")
    monkeypatch.delenv("OMBRIDGE_STORE", raising=False)
    if kind == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        monkeypatch.setenv("OMBRIDGE_STORE", server.url(request.getfixturevalue("pg_db")))
        monkeypatch.setenv("PGPASSFILE", server.passfile)
    return kind

"""Fixtures of a real PostgreSQL server (tests/pg_support.py), one per pytest-xdist worker.

Loaded by ``tests/pg/conftest.py``; the tests that will run against both stores load it the same
way (or through ``pytest_plugins`` in the top-level conftest).
"""

from __future__ import annotations

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

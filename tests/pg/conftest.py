"""The tests of the event core on PostgreSQL use the real server of tests/conftest_pg.py."""

from conftest_pg import pg_conn, pg_db, pg_server  # noqa: F401 - fixtures, found by name

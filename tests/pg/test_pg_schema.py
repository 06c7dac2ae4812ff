"""The event core's PostgreSQL schema (bridge/store/sql/postgresql, bridge/store/pgschema.py) on a real server:
migrations applied once, in order, under a lock, a newer schema refused, and the same tables and
columns as the SQLite schema of bridge/store/__init__.py, but for the differences listed here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psycopg
import pytest

from bridge import store
from bridge.errors import SchemaTooNew, StoreError
from bridge.store import pgschema, sqlschema

pytestmark = pytest.mark.xdist_group("postgresql")  # one server for every test of this folder

LATEST = pgschema.latest()
VERSIONS = [m.version for m in pgschema.migrations()]

# Tables only the PostgreSQL store has, and why (docs/multinode.md).
PG_ONLY_TABLES = {
    "schema_migrations": "SQLite keeps its schema version in PRAGMA user_version",
}
# Indexes only the PostgreSQL store has, and why.
PG_ONLY_INDEXES: dict[str, str] = {}
# How SQLite's declared types map to PostgreSQL's.
TYPES = {"TEXT": {"text"}, "REAL": {"double precision"}, "INTEGER": {"bigint", "integer", "smallint"}}


def _versions(conn) -> list[tuple[int, str]]:
    return conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()


def test_migrate_creates_the_schema_in_an_empty_database_and_a_second_run_changes_nothing(pg_conn):
    assert pgschema.current_version(pg_conn) == 0
    assert pgschema.pending(pg_conn) == VERSIONS
    assert pgschema.migrate(pg_conn, applied_by="test") == VERSIONS
    assert pgschema.current_version(pg_conn) == LATEST and pgschema.pending(pg_conn) == []
    first = pg_conn.execute("SELECT version, name, checksum, applied_at, applied_by FROM schema_migrations "
                            "ORDER BY version").fetchall()
    assert [(v, by) for v, _, _, _, by in first] == [(v, "test") for v in VERSIONS]
    assert [c for _, _, c, _, _ in first] == [m.checksum for m in pgschema.migrations()]

    assert pgschema.migrate(pg_conn) == []
    assert pg_conn.execute("SELECT version, name, checksum, applied_at, applied_by FROM schema_migrations "
                           "ORDER BY version").fetchall() == first


def test_both_stores_share_one_numbering_from_step_13() -> None:
    # Step N is the same change on both lines; the last number is the same (issue 30).
    assert LATEST == sqlschema.SCHEMA_VERSION
    assert VERSIONS[:pgschema.LEGACY] == [1, 2, 3] and VERSIONS[pgschema.LEGACY] == pgschema.SHARED_FROM == 13


def test_migrate_refuses_a_connection_inside_a_transaction(pg_server, pg_db):
    with pg_server.connect(pg_db) as conn:  # not autocommit: the SELECT opens a transaction
        conn.execute("SELECT 1")
        with pytest.raises(StoreError, match="outside any transaction"):
            pgschema.migrate(conn)


_MIGRATOR = """
import json, sys
import psycopg
from bridge.store import pgschema, sqlschema
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    print(json.dumps(pgschema.migrate(conn, applied_by=sys.argv[2])))
"""


def test_two_nodes_migrating_at_once_both_succeed_and_each_file_is_applied_once(pg_server, pg_db, pg_conn):
    env = {**os.environ, **pg_server.env()}
    # Hold the migrators' lock while both start, so that they meet there for certain.
    with pg_server.connect(pg_db) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (pgschema.LOCK_KEY,))
        procs = [subprocess.Popen([sys.executable, "-c", _MIGRATOR, pg_server.url(pg_db), f"node-{n}"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (1, 2)]
        try:
            deadline = time.monotonic() + 60
            while pg_conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                  "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                                  ).fetchone()[0] < 2:
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                assert time.monotonic() < deadline, "the two migrators never waited for the lock"
                time.sleep(0.02)
        finally:
            holder.commit()  # releases the lock: the two race from here
            outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = [json.loads(out) for out, _ in outputs]
    assert sorted(applied[0] + applied[1]) == VERSIONS, applied
    assert [v for v, _ in _versions(pg_conn)] == VERSIONS


def test_a_schema_newer_than_this_ombridge_is_refused_before_anything_is_written(pg_conn):
    pgschema.migrate(pg_conn)
    pg_conn.execute("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (%s, 'future', '', 0)",
                    (LATEST + 1,))
    before = _versions(pg_conn)
    for call in (pgschema.migrate, pgschema.pending):
        with pytest.raises(SchemaTooNew) as refused:
            call(pg_conn)
        assert str(refused.value) == (f"the database {pg_conn.info.dbname} on 127.0.0.1:{pg_conn.info.port} has "
                                      f"schema version {LATEST + 1}; this ombridge knows up to {LATEST}: "
                                      "upgrade ombridge on this node")
        assert refused.value.exit_code == 1 and "\n" not in str(refused.value)
    assert _versions(pg_conn) == before


def _sqlite_schema(tmp_path) -> tuple[dict[str, list[tuple[str, str, bool]]], dict[str, str]]:
    conn = store.connect(str(tmp_path))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")]
        columns = {t: [(r["name"], r["type"], bool(r["notnull"] or r["pk"]))
                       for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
        indexes = {r[0]: r[1] or "" for r in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()
    return columns, indexes


def _pg_schema(conn) -> tuple[dict[str, list[tuple[str, str, bool]]], dict[str, str]]:
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, kind, nullable in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"):
        columns.setdefault(table, []).append((column, kind, nullable == "NO"))
    indexes = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                                "AND right(indexname, 5) <> '_pkey'").fetchall())
    return columns, indexes


def test_the_postgresql_schema_has_the_sqlite_tables_and_columns_but_for_the_listed_differences(pg_conn, tmp_path):
    pgschema.migrate(pg_conn)
    lite, lite_indexes = _sqlite_schema(tmp_path)
    pg, pg_indexes = _pg_schema(pg_conn)

    assert sorted(set(pg) - set(lite)) == sorted(PG_ONLY_TABLES)
    assert sorted(set(lite) - set(pg)) == []
    for table, columns in lite.items():
        # same names in the same order, same nullability, matching types
        assert [(name, notnull) for name, _, notnull in pg[table]] == [(name, notnull) for name, _, notnull in columns]
        for (name, lite_type, _), (_, pg_type, _) in zip(columns, pg[table]):
            assert pg_type in TYPES[lite_type], f"{table}.{name}: {lite_type} in SQLite, {pg_type} in PostgreSQL"

    assert sorted(set(pg_indexes) - set(lite_indexes)) == sorted(PG_ONLY_INDEXES)
    assert sorted(set(lite_indexes) - set(pg_indexes)) == []
    for name, sql in lite_indexes.items():  # a partial index stays partial, a unique one unique
        assert ("WHERE" in pg_indexes[name]) == (" WHERE " in sql), name
        assert ("UNIQUE" in pg_indexes[name]) == ("UNIQUE" in sql), name
    assert pg_indexes["subscriber_events_open"].endswith(
        "USING btree (lane, next_attempt_at, id) WHERE (status = 'open'::text)")


def _enqueue(conn, rows: int, lane: str = "backsync") -> None:
    sid = conn.execute("INSERT INTO subscribers (action, timeout, retries, created_at) VALUES ('backsync', 60, 5, 0) "
                       "RETURNING id").fetchone()[0]
    conn.execute("INSERT INTO events (topic, key, created_at) SELECT 'ombridge/close', '{}', 0 "
                 "FROM generate_series(1, %s)", (rows,))
    conn.execute("INSERT INTO subscriber_events (event_id, subscriber_id, lane, next_attempt_at, created_at, "
                 "updated_at) SELECT id, %s, %s, id, 0, 0 FROM events", (sid, lane))


_CLAIM = ("SELECT id FROM subscriber_events WHERE lane = %s AND status = 'open' AND next_attempt_at <= %s "
          "ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED")


def test_the_claim_query_reads_the_open_index_and_two_claimers_take_disjoint_rows(pg_server, pg_db, pg_conn):
    # The shape of the seam's claim on PostgreSQL (docs/decisions.md, "One queue design, two
    # databases"): the schema's partial index serves it, and SKIP LOCKED hands two nodes
    # different rows instead of making one wait for the other.
    pgschema.migrate(pg_conn)
    _enqueue(pg_conn, 10)
    pg_conn.execute("ANALYZE subscriber_events")
    with pg_conn.transaction():
        pg_conn.execute("SET LOCAL enable_seqscan = off")  # ten rows: the planner would rather scan them
        plan = "\n".join(r[0] for r in pg_conn.execute("EXPLAIN " + _CLAIM, ("backsync", 1e12, 500)))
    assert "subscriber_events_open" in plan, plan
    with pg_server.connect(pg_db) as a, pg_server.connect(pg_db) as b:
        first = [r[0] for r in a.execute(_CLAIM, ("backsync", 1e12, 4))]
        second = [r[0] for r in b.execute(_CLAIM, ("backsync", 1e12, 4))]
        assert first == [1, 2, 3, 4] and second == [5, 6, 7, 8]
        assert [r[0] for r in b.execute(_CLAIM, ("actions", 1e12, 4))] == []  # the other lane has none


def test_a_row_with_a_bad_flag_or_a_dangling_reference_is_refused(pg_conn):
    pgschema.migrate(pg_conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        pg_conn.execute("INSERT INTO subscribers (action, timeout, retries, created_at, disabled) "
                        "VALUES ('command', 1, 0, 0, 2)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):  # (a delivery's subscriber is still checked: 0016)
        pg_conn.execute("INSERT INTO subscriber_events (event_id, subscriber_id, next_attempt_at, created_at, "
                        "updated_at) VALUES (1, 12345, 0, 0, 0)")


def test_a_migration_that_fails_is_rolled_back_whole_and_named(pg_conn, monkeypatch):
    shipped = pgschema.migrations()
    broken = pgschema.Migration(LATEST + 1, "broken", "CREATE TABLE half_done (n integer); SELECT 1 / 0;", "x")
    monkeypatch.setattr(pgschema, "migrations", lambda: [*shipped, broken])
    with pytest.raises(StoreError) as failed:
        pgschema.migrate(pg_conn)
    assert str(failed.value) == (f"migration {LATEST + 1:04d}_broken.sql failed in the database {pg_conn.info.dbname} "
                                 f"on 127.0.0.1:{pg_conn.info.port}: division by zero; nothing of it was applied")
    # the files before it were applied and recorded, the broken one not at all
    assert [v for v, _ in _versions(pg_conn)] == VERSIONS
    assert pg_conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)

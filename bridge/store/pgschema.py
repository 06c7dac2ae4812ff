"""The event core's schema on PostgreSQL: versioned SQL files, applied in order under a lock.

The files are ``bridge/store/sql/postgresql/NNNN_name.sql``. From 0013 on, a file's number is the
schema version both stores share: step N is the same change on SQLite (:mod:`bridge.store.sqlschema`,
``user_version`` N) and on PostgreSQL, and ``tests/pg/test_pg_schema.py`` checks that the two
lines end at the same number. The three files before it (0001-0003, from before the numbering was
shared) bring a database to what SQLite has at step 12; there is no file 0004-0012. The schema
version is the last file applied. Each file is applied once, in a transaction of its own
that also records it in ``schema_migrations`` (so a file is either wholly applied and recorded,
or not at all), and that transaction first takes a transaction-level advisory lock: nodes
starting together queue there, and each finds the files the one before it applied already
recorded. A database whose schema is newer than the files this ombridge ships is refused with
:class:`bridge.errors.SchemaTooNew` before anything is written: an older node never writes
into a newer schema. A released file is never edited; a change is a new file.

This is the PostgreSQL twin of :mod:`bridge.store.sqlschema`'s ``MIGRATIONS`` (SQLite's ``user_version``
and idempotent Python steps); ``tests/pg/test_pg_schema.py`` keeps the two schemas' tables and
columns equal, except the differences it lists. Only the standard library is imported here;
psycopg is the caller's (a ``psycopg.Connection``).
"""

from __future__ import annotations

import hashlib
import re
import time
from importlib import resources
from typing import Any, NamedTuple

from ..errors import SchemaTooNew, StoreError

# The key of the migrator's advisory lock: "ombrdg" as one bigint. Advisory locks are
# database-wide; another program would have to pick this very number to meet ours.
LOCK_KEY = int.from_bytes(b"ombrdg", "big")
LEGACY = 3  # files numbered on their own, before the stores shared one numbering
SHARED_FROM = 13  # the first file numbered by the shared schema version
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql\Z")


class Migration(NamedTuple):
    """One SQL file: its version (the file's number), name, text and sha256."""

    version: int
    name: str
    sql: str
    checksum: str


def migrations() -> list[Migration]:
    """The SQL files shipped with this ombridge, in order (version 1 first)."""
    found = []
    for entry in resources.files("bridge.store").joinpath("sql", "postgresql").iterdir():
        match = _FILE.match(entry.name)
        if match:
            text = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match[1]), match[2], text, hashlib.sha256(text.encode()).hexdigest()))
    found.sort()
    versions = [m.version for m in found]
    if versions != [*range(1, LEGACY + 1), *range(SHARED_FROM, SHARED_FROM + len(found) - LEGACY)]:
        raise StoreError(f"the PostgreSQL migrations shipped with ombridge are not numbered 1-{LEGACY}, then "
                         f"{SHARED_FROM}, {SHARED_FROM + 1}...: {', '.join(map(str, versions))} (a broken installation)")
    return found


def latest() -> int:
    """The schema version this ombridge's files bring a database to (the same number as SQLite's)."""
    return migrations()[-1].version


def current_version(conn: Any) -> int:
    """The schema version of the database ``conn`` is connected to (0: no ombridge schema yet)."""
    if conn.execute("SELECT to_regclass('schema_migrations') IS NULL").fetchone()[0]:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0])


def pending(conn: Any) -> list[int]:
    """The versions :func:`migrate` would apply (``check --db``, ``status``); refuses a newer schema."""
    known = migrations()
    version = current_version(conn)
    if version > known[-1].version:
        raise SchemaTooNew(_where(conn), version, known[-1].version)
    return [m.version for m in known if m.version > version]


def migrate(conn: Any, *, applied_by: str = "") -> list[int]:
    """Apply the pending SQL files to the database of ``conn`` (a psycopg connection outside a
    transaction), each in a transaction of its own under the migrator's lock; returns the
    versions applied (``[]`` when the schema was current). ``applied_by`` names the node.

    Raises :class:`bridge.errors.SchemaTooNew`, writing nothing, when the database's schema is
    newer than this ombridge's files, and :class:`bridge.errors.StoreError` naming the file when
    one fails (that file is rolled back whole; the ones before it stay applied).
    """
    from psycopg.pq import TransactionStatus

    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise StoreError("the schema is migrated outside any transaction: each file is one transaction of its own")
    known = migrations()
    applied: list[int] = []
    while True:
        with conn.transaction():
            # Queue behind any other migrator; the version is read once we hold the lock.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            version = current_version(conn)
            if version > known[-1].version:
                raise SchemaTooNew(_where(conn), version, known[-1].version)
            if version == known[-1].version:
                return applied
            step = next(m for m in known if m.version > version)
            _apply(conn, step)
            conn.execute("INSERT INTO schema_migrations (version, name, checksum, applied_at, applied_by) "
                         "VALUES (%s, %s, %s, %s, %s)", (step.version, step.name, step.checksum, time.time(),
                                                         applied_by))
        applied.append(step.version)


def _apply(conn: Any, step: Migration) -> None:
    import psycopg

    try:
        conn.execute(step.sql)  # no parameters: sent as one simple query, several statements
    except psycopg.DatabaseError as exc:  # (the caller's transaction rolls the whole file back)
        message = (exc.diag.message_primary or str(exc)).strip()
        raise StoreError(f"migration {step.version:04d}_{step.name}.sql failed in {_where(conn)}: {message}; "
                         "nothing of it was applied") from exc


def _where(conn: Any) -> str:
    # The database as an operator would name it; never the password (libpq's info has none).
    info = conn.info
    host = info.host if info.host and not info.host.startswith("/") else "localhost"
    return f"the database {info.dbname} on {host}:{info.port}"


def check(conn: Any) -> list[str]:
    """What is wrong with the event core's schema in PostgreSQL, a sentence each ([] when it is
    sound): ``ombridge check --db``. The server guards its own pages; this checks what ours can
    break: migrations applied and unchanged, every table and index there and valid (an
    interrupted ``CREATE INDEX CONCURRENTLY`` leaves an invalid one), and each id sequence past
    its table's largest id (a copy that forgot to move it would make new rows fail)."""
    known = migrations()
    found = []
    applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    for m in known:
        if m.version not in applied:
            found.append(f"migration {m.version:04d}_{m.name}.sql is not applied")
        elif applied[m.version] != m.checksum:
            found.append(f"migration {m.version:04d}_{m.name}.sql was applied with other contents than this "
                         "ombridge ships (checksum)")
    sql = "\n".join(m.sql for m in known)
    tables = re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql)
    dropped = set(re.findall(r"DROP INDEX (?:IF EXISTS )?(\w+)", sql))  # (by a later file)
    indexes = [i for i in re.findall(r"CREATE (?:UNIQUE )?INDEX (?:IF NOT EXISTS )?(\w+)", sql) if i not in dropped]
    present = {r[0] for r in conn.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                                          "c.relnamespace WHERE n.nspname = current_schema()")}
    found += [f"table {t} is missing" for t in tables if t not in present]
    found += [f"index {i} is missing" for i in indexes if i not in present]
    found += [f"index {r[0]} is invalid (an interrupted build): drop it and run the migration's CREATE INDEX again"
              for r in conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                    "WHERE n.nspname = current_schema() AND NOT i.indisvalid")]
    for table in tables:
        if table not in present:
            continue
        (sequence,) = conn.execute("SELECT pg_get_serial_sequence(?, 'id')", (table,)).fetchone() \
            if _has_id(conn, table) else (None,)
        if sequence is None:
            continue
        last = conn.execute("SELECT last_value FROM pg_sequences WHERE schemaname || '.' || sequencename = ?",
                            (sequence.replace('"', ""),)).fetchone()
        (largest,) = conn.execute(f"SELECT max(id) FROM {table}").fetchone()  # (a name from our own files)
        if largest is not None and (last is None or last[0] is None or last[0] < largest):
            found.append(f"the id sequence of {table} is behind its largest id {largest}: new rows would fail; "
                         f"SELECT setval('{sequence}', {largest}) repairs it")
    if {"events", "subscriber_events", "attempts", "claims"} <= present:
        found += _orphans(conn)
    return found


# The references 0016_queue_writes.sql stopped checking row by row (their one writer keeps them):
# rows they would have refused, and what repairs them.
_ORPHANS = (
    ("SELECT count(*) FROM subscriber_events se WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = se.event_id)",
     "deliveries name an event that is gone (they can never be delivered)",
     "DELETE FROM subscriber_events se WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = se.event_id)"),
    ("SELECT count(*) FROM attempts a WHERE NOT EXISTS "
     "(SELECT 1 FROM subscriber_events se WHERE se.id = a.subscriber_event_id)",
     "attempts name a delivery that is gone",
     "DELETE FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM subscriber_events se WHERE se.id = a.subscriber_event_id)"),
    ("SELECT count(*) FROM claims c WHERE NOT EXISTS (SELECT 1 FROM subscriber_events se WHERE se.id = c.delivery_id)",
     "claims name a delivery that is gone",
     "DELETE FROM claims c WHERE NOT EXISTS (SELECT 1 FROM subscriber_events se WHERE se.id = c.delivery_id)"),
)


def _orphans(conn: Any) -> list[str]:
    found = []
    for count, what, repair in _ORPHANS:
        n = conn.execute(count).fetchone()[0]
        if n:
            found.append(f"{n} {what}: {repair} repairs it")
    return found


def _has_id(conn: Any, table: str) -> bool:
    return conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND table_name = ? AND column_name = 'id'", (table,)).fetchone() is not None

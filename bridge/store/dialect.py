"""What differs between the event core on SQLite and on PostgreSQL, and nothing else.

One copy of every query lives in :mod:`bridge.eventcore.deliveries`, :mod:`bridge.eventcore.events`,
:mod:`bridge.eventcore.catalog` and the other modules of the event core; each connection carries a
``dialect`` (this module's :data:`SQLITE`, or :class:`PostgreSQL` for :mod:`bridge.store.pgstore`'s
connections), and the few queries that must differ splice in one of its fragments. The table
"Every SQLite-specific construct, and its counterpart" in docs/decisions.md lists every difference
and where it is handled; what is portable (``INSERT ... RETURNING``, ``ON CONFLICT DO NOTHING``,
``count(*) FILTER``...) is simply written once.

Only the standard library is imported here: ``ombridge send`` on SQLite never loads psycopg.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

BUSY_TIMEOUT = 30.0  # seconds a writer waits for another before "database is locked"
_BUSY_TIMEOUT = f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}"
CHUNK = 500  # ids per statement on SQLite, whose statements take at most 32,766 parameters
# The key of the advisory lock of catalog writes on PostgreSQL ("ombcat" as one bigint).
CATALOG_LOCK = int.from_bytes(b"ombcat", "big")
WAKE_CHANNEL = "ombridge_due"  # PostgreSQL's NOTIFY channel: deliveries became due (bridge/daemon/wakeups.py)


class Busy(Exception):
    """Another writer holds the lock, and the transaction was asked not to wait."""


class Dialect:
    """SQLite's spellings (the embedded default); :class:`PostgreSQL` overrides what differs."""

    name = "sqlite"
    skip_locked = ""  # the claim: SQLite's write lock already keeps claimers apart
    copies = False  # whether insert_rows streams (COPY): then it beats any grouping of rows
    # What the store can do, asked instead of "which database is this" (tests/test_structure.py):
    shared = False  # several nodes may share it (nodes, leases across hosts, LISTEN/NOTIFY wake-ups)
    checkpoints = True  # its WAL is copied back by a checkpoint of ours (store.checkpoint)
    column_affinity = True  # a text parameter matches a number in a column by the column's affinity (5 = '5')

    def begin_snapshot(self, conn: Any) -> None:
        """A read transaction that sees every table as of one instant (``ROLLBACK`` ends it)."""
        conn.execute("BEGIN")

    def stream(self, conn: Any, name: str) -> Any:
        """A cursor that reads a large result a chunk at a time (``fetchmany``): SQLite's does."""
        return conn.cursor()

    def insertion_order(self, first_column: str) -> str:
        """The SQL order of a table's rows as they were inserted (a table without an id of ours)."""
        return "rowid"

    def announce(self, conn: Any) -> None:
        """Deliveries became due now, in the caller's transaction: wake every node at its commit.
        On SQLite the one supervisor's doorbell (rung by the sender) is enough."""

    def insert_rows(self, conn: Any, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (values for ``columns``, comma-separated) into ``table``: one
        ``executemany`` on SQLite."""
        marks = ", ".join("?" * (columns.count(",") + 1))
        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def lock_rows(self, conn: Any, table: str, ids: Sequence[int]) -> None:
        """Lock the rows ``ids`` of ``table`` until the caller's transaction ends (in id order, so
        that two lockers never wait for each other in a circle): nothing on SQLite, whose write
        lock the transaction already holds."""

    def upsert_rows(self, conn: Any, table: str, columns: str, types: Sequence[str], conflict: str,
                    rows: Sequence[Sequence[Any]]) -> set[Any]:
        """Insert ``rows`` into ``table``, each one whose key (the first of ``columns``) is taken
        going to ``ON CONFLICT (key) <conflict>`` (``DO UPDATE ... WHERE``); returns the keys of
        the rows inserted or updated. ``types``: the columns' SQL types (PostgreSQL's arrays)."""
        key = columns.split(",", 1)[0].strip()
        marks = ", ".join("?" * len(types))
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT ({key}) {conflict}"
        if conn.executemany(sql, rows).rowcount == len(rows):
            return {r[0] for r in rows}  # (the caller's write lock: always, unless a caller's bug)
        raise RuntimeError(f"{table}: {len(rows)} rows to write, not all written under the write lock")

    def begin(self, conn: Any, wait: bool = True, catalog: bool = False) -> None:
        """Start a write transaction (``BEGIN IMMEDIATE``). Waiting for another process's write
        lock never happens in SQLite's busy handler, which sleeps 10 to 100 ms at a time once a
        wait gets long: the lock is polled every fraction of a millisecond. ``wait=False``
        raises :class:`Busy` at once instead. ``catalog`` needs nothing here: the one write lock
        already serializes "check, then insert"."""
        import sqlite3

        conn.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = nap = 0.0
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if not wait:
                        raise Busy from exc
                    deadline = deadline or time.monotonic() + BUSY_TIMEOUT
                    if time.monotonic() > deadline:
                        raise
                nap = min(nap * 2 or 0.0001, 0.005)
                time.sleep(nap)
        finally:
            conn.execute(_BUSY_TIMEOUT)

    def clock(self, conn: Any) -> float | None:
        """The store's clock (Unix time), when it is not this machine's: None on SQLite."""
        return None

    def busy(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised inside a transaction begun with ``wait=False``, means "another
        writer holds a lock" (SQLite's lock is taken by :meth:`begin` itself)."""
        return False

    def indexed_by(self, index: str) -> str:
        """Make a read use ``index`` (SQLite would rather scan another that covers every row)."""
        return f" INDEXED BY {index}"

    def bucket(self, expr: str) -> str:
        """The whole number below the non-negative ``expr`` (a chart's bucket)."""
        return f"CAST({expr} AS INTEGER)"  # (truncates; PostgreSQL's CAST rounds)

    def reserve_ids(self, conn: Any, table: str, n: int) -> list[int]:
        """``n`` new ids of ``table``, inside the caller's write transaction: the ones SQLite
        would give, one after the other (the write lock is ours), so that the rows can go in
        with one ``executemany``."""
        last = self.high_water(conn, table)
        return list(range(last + 1, last + 1 + n))

    def high_water(self, conn: Any, table: str) -> int:
        """The largest id ``table`` ever handed out (0: none yet), deleted rows included: no id at
        or below it is given again (AUTOINCREMENT's sqlite_sequence, PostgreSQL's sequence)."""
        return conn.execute(f"SELECT max(coalesce((SELECT max(id) FROM {table}), 0), coalesce((SELECT seq FROM "
                            "sqlite_sequence WHERE name = ?), 0))", (table,)).fetchone()[0]

    def keep_high_water(self, conn: Any, table: str, last: int) -> None:
        """From now on ``table`` hands out ids above ``last`` (a copied store keeps the history of
        its ids: an id shown before the copy does not come back after it)."""
        if not conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (last, table)).rowcount:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, last))

    def in_ids(self, sql: str, args: Sequence[Any], ids: Sequence[int]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``sql`` (holding ``IN ({ids})``) and its arguments for every chunk of ``ids``."""
        for n in range(0, len(ids), CHUNK):
            part = ids[n:n + CHUNK]
            yield sql.format(ids=",".join("?" * len(part))), (*args, *part)

    def columns(self, conn: Any, table: str) -> list[str]:
        """The column names of ``table`` ([] when there is no such table)."""
        return [r[1] for r in conn.execute(f"PRAGMA table_info({quote(table)})")]


class PostgreSQL(Dialect):
    """PostgreSQL's spellings (the connections of :mod:`bridge.store.pgstore`)."""

    name = "postgresql"
    copies = True
    shared = True
    checkpoints = False  # (the server checkpoints itself)
    column_affinity = False  # a parameter's type is what it is: a text must be compared as text

    def begin_snapshot(self, conn: Any) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def stream(self, conn: Any, name: str) -> Any:
        return conn.cursor(name=name)  # a server-side cursor: rows come as they are fetched

    def insertion_order(self, first_column: str) -> str:
        return quote(first_column)
    # Two nodes claiming at once take disjoint deliveries and never wait for each other: the
    # candidates are locked (a lock, not a new version of the row: nothing of it is rewritten).
    skip_locked = " FOR UPDATE OF se SKIP LOCKED"

    def begin(self, conn: Any, wait: bool = True, catalog: bool = False) -> None:
        """``BEGIN`` (read committed: row locks only). ``wait=False``: a lock not granted within
        50 ms fails the statement waiting for it (:meth:`busy`). ``catalog``: catalog writes
        ("check, then insert") take one advisory lock first, so two nodes cannot both pass the
        check; they are rare, so one lock for all keeps SQLite's meaning."""
        conn.execute("BEGIN")
        try:
            if not wait:
                conn.execute("SET LOCAL lock_timeout = '50ms'")
            if catalog:
                conn.execute("SELECT pg_advisory_xact_lock(?)", (CATALOG_LOCK,))
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if self.busy(exc):
                raise Busy from exc
            raise

    def insert_rows(self, conn: Any, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        # COPY: rows streamed in one statement, a fraction of the server's and the driver's work
        # of an INSERT per row (a burst's sender: 3x faster, docs/decisions.md).
        with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def lock_rows(self, conn: Any, table: str, ids: Sequence[int]) -> None:
        if ids:
            conn.execute(f"SELECT 1 FROM {table} WHERE id = ANY(?) ORDER BY id FOR UPDATE", (list(ids),)).fetchall()

    def upsert_rows(self, conn: Any, table: str, columns: str, types: Sequence[str], conflict: str,
                    rows: Sequence[Sequence[Any]]) -> set[Any]:
        # One statement, each column as one array; the rows a conflict refused are not returned.
        key = columns.split(",", 1)[0].strip()
        arrays = ", ".join(f"?::{t}[]" for t in types)
        return {r[0] for r in conn.execute(
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT ({key}) {conflict} "
            f"RETURNING {key}", [list(column) for column in zip(*rows)])}

    def announce(self, conn: Any) -> None:
        # Delivered at the commit, to every connection that listens (bridge/daemon/wakeups.py); several
        # in one transaction arrive as one.
        conn.execute(f"NOTIFY {WAKE_CHANNEL}")

    def clock(self, conn: Any) -> float | None:
        return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0])

    def busy(self, exc: BaseException) -> bool:
        from psycopg import errors

        return isinstance(exc, errors.LockNotAvailable)

    def indexed_by(self, index: str) -> str:
        return ""  # no hints: the planner picks a partial index by its predicate

    def bucket(self, expr: str) -> str:
        return f"floor({expr})::bigint"

    def reserve_ids(self, conn: Any, table: str, n: int) -> list[int]:
        # Two nodes must not take the same ids: the table's own sequence hands them out.
        if n <= 0:
            return []
        return [r[0] for r in conn.execute(
            "SELECT nextval(pg_get_serial_sequence(?, 'id')) FROM generate_series(1, ?)", (table, n))]

    def high_water(self, conn: Any, table: str) -> int:
        return conn.execute("SELECT greatest(coalesce(pg_sequence_last_value(pg_get_serial_sequence(?, 'id')), 0), "
                            f"coalesce((SELECT max(id) FROM {table}), 0))", (table,)).fetchone()[0]

    def keep_high_water(self, conn: Any, table: str, last: int) -> None:
        if last > 0:
            conn.execute("SELECT setval(pg_get_serial_sequence(?, 'id'), greatest(?, coalesce("
                         "pg_sequence_last_value(pg_get_serial_sequence(?, 'id')), 0)))", (table, last, table))

    def in_ids(self, sql: str, args: Sequence[Any], ids: Sequence[int]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        if ids:  # one statement, the ids as one array
            yield sql.replace("IN ({ids})", "= ANY(?)"), (*args, list(ids))

    def columns(self, conn: Any, table: str) -> list[str]:
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position", (table,))]


def quote(name: str) -> str:
    """An SQL identifier, quoted (a context's table name comes from the operator)."""
    return '"' + name.replace('"', '""') + '"'


SQLITE = Dialect()
POSTGRESQL = PostgreSQL()


def of(conn: Any) -> Dialect:
    """The dialect of ``conn`` (SQLite's for any connection that names none, e.g. a context file)."""
    return getattr(conn, "dialect", SQLITE)


def errors() -> tuple[type[BaseException], ...]:
    """The exceptions of the database drivers loaded in this process (``except dialect.errors()``):
    a failing statement, a damaged or unreachable store."""
    import sqlite3

    found: tuple[type[BaseException], ...] = (sqlite3.Error,)
    psycopg = sys.modules.get("psycopg")
    return found + (psycopg.Error,) if psycopg is not None else found


def unavailable() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database cannot be reached" (PostgreSQL's; none on SQLite)."""
    psycopg = sys.modules.get("psycopg")
    return (psycopg.OperationalError,) if psycopg is not None else ()

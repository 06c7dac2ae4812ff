"""The event core in PostgreSQL: a psycopg 3 connection that the event core's modules use as
they use SQLite's (docs/decisions.md, "One queue design, two databases").

- ``conn.execute(sql, args)`` takes SQLite's ``?`` placeholders: each distinct SQL text is
  rewritten once (``?`` to ``%s``, ``%`` to ``%%``) and remembered, so that the call sites keep
  one copy of every query;
- rows read like ``sqlite3.Row``: ``r["col"]``, ``r[0]``, ``dict(r)``, unpacking; a cursor whose
  ``row_factory`` is set to ``None`` gives plain tuples (the claim's hot path);
- ``fetchall()`` after a write gives ``[]`` (psycopg would raise), as SQLite's;
- ``conn.executemany`` as on SQLite (psycopg pipelines it: one round trip per batch);
- autocommit, as the SQLite connections: :func:`bridge.store.transaction` begins and ends
  each write transaction through ``conn.dialect`` (:class:`bridge.store.dialect.PostgreSQL`).

:func:`connect` refuses a URL holding a password (libpq's own files keep it: ``~/.pgpass``,
``PGPASSFILE``, a service file), says in one sentence when the server cannot be reached, and
migrates the schema (:func:`bridge.store.pgschema.migrate`, under its lock) before handing out the
connection, refusing a schema newer than this ombridge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ..errors import StoreError, StoreUnavailable
from . import pgschema
from .dialect import POSTGRESQL

CONNECT_TIMEOUT = 10  # seconds: an unreachable server is said so, not waited for
CLOCK_EVERY = 30.0  # seconds between two measures of a connection's clock against the database's

_QMARKS: dict[str, str] = {}


def pg_sql(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled), remembered (for a
    statement with parameters: without any, psycopg sends the text unchanged)."""
    found = _QMARKS.get(sql)
    if found is None:
        found = _QMARKS[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found


_ROW_CLASSES: dict[tuple[str, ...], type[tuple[Any, ...]]] = {}


def _row_class(names: tuple[str, ...]) -> type[tuple[Any, ...]]:
    # One tuple subclass per column list, knowing its names: ``r["id"]``, ``r[0]`` and ``dict(r)``.
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        index = {name: i for i, name in enumerate(names)}

        def item(self: tuple[Any, ...], key: Any) -> Any:
            return tuple.__getitem__(self, index[key] if isinstance(key, str) else key)

        cls = _ROW_CLASSES[names] = type("Row", (tuple,), {
            "__slots__": (), "__getitem__": item, "keys": lambda self: list(names)})
    return cls


def rows(cursor: Any) -> Any:
    """psycopg's row factory of the event core: tuples that also answer by column name."""
    description = cursor.description
    if description is None:
        return tuple
    cls = _row_class(tuple(c.name for c in description))
    return lambda values: tuple.__new__(cls, values)


class Cursor(psycopg.Cursor):
    """A cursor taking ``?`` placeholders; ``row_factory = None`` gives plain tuples."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # noqa: D102
        # (without parameters psycopg sends the text as it is: a `%` stays single, as on SQLite)
        return super().execute(pg_sql(query) if params is not None and isinstance(query, str) else query, params,
                               **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:  # noqa: D102
        super().executemany(pg_sql(query) if isinstance(query, str) else query, params_seq, **kwargs)

    def fetchall(self) -> list[Any]:  # noqa: D102 - as SQLite's: [] after a statement returning no rows
        return super().fetchall() if self.description is not None else []

    @property
    def row_factory(self) -> Any:  # noqa: D102
        return self._row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        psycopg.Cursor.row_factory.fset(self, tuple_row if factory is None else factory)  # type: ignore[attr-defined]


class Connection(psycopg.Connection):
    """A psycopg connection that the event core's modules use like SQLite's (see the module)."""

    dialect = POSTGRESQL
    write_lock = None  # (SQLite's in-process lock: PostgreSQL locks rows)
    _skew = 0.0
    _skew_at: float | None = None

    def clock_skew(self) -> float:
        """How many seconds this machine's clock is ahead of the database's, measured on this
        connection at most every :data:`CLOCK_EVERY` seconds (the last measure while a new one
        cannot be taken: the statement that follows says why)."""
        if self._skew_at is None or time.monotonic() - self._skew_at > CLOCK_EVERY:
            try:
                before = time.time()
                theirs = float(self.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0])
                self._skew = (before + time.time()) / 2 - theirs  # (half the round trip either side)
                self._skew_at = time.monotonic()
            except psycopg.Error:
                pass
        return self._skew

    def executemany(self, sql: str, params_seq: Any) -> Any:
        """Run ``sql`` once per item of ``params_seq``, as ``sqlite3.Connection.executemany``."""
        cur = self.cursor()
        cur.executemany(sql, params_seq)
        return cur


def where(url: str) -> str:
    """The store of ``url`` as an operator names it, never with a password (``db on host:port``)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the store URL"
    host = str(info.get("host") or "localhost")
    return f"the database {info.get('dbname') or info.get('user') or '?'} on {host}:{info.get('port') or 5432}"


def check_url(url: str) -> None:
    """Refuse a store URL that cannot be parsed or that holds a password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"the store URL cannot be read: {str(exc).strip()}") from None
    if info.get("password"):
        raise StoreError("the store URL holds a password: keep it out of command lines and ombridge.conf, "
                         "in ~/.pgpass, in the file PGPASSFILE names, or in a service file (PGSERVICEFILE), "
                         "as docs/multinode.md shows")


def connect(url: str, *, node: str = "", lane: bool = False) -> Connection:
    """A connection to the event core at ``url``, its schema migrated first (see the module).
    ``node`` names who applied a migration; ``lane=True`` is for the Event Manager's lanes,
    whose acknowledgements do not wait for the server's disk (a crash of the server may forget
    the last ones: a duplicate delivery, never a loss)."""
    check_url(url)
    try:
        conn = Connection.connect(url, **_settings())
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise StoreUnavailable(f"the event core in {where(url)} is unreachable ({reason})") from None
    try:
        conn.cursor_factory = psycopg.Cursor  # the migrator's own queries use %s
        try:
            pgschema.migrate(conn, applied_by=node)
        finally:
            conn.cursor_factory = Cursor
        if lane:
            conn.execute("SET synchronous_commit = off")
    except BaseException:
        conn.close()
        raise
    return conn


def _settings() -> dict[str, Any]:
    # Every connection's, made by connect() or by a Lender's pool.
    return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, "application_name": "ombridge",
            "cursor_factory": Cursor, "row_factory": rows}


class Lender:
    """Connections lent to short requests (the listener's console pages and
    ``/metrics``), from a psycopg pool: a new connection costs ~13 ms (TCP, SCRAM, the schema's
    check) where a query costs ~0.1 ms. A connection is checked before it is lent (one round
    trip: a server restart leaves no broken connection in the pool), rolled back if a request
    left a transaction open, and the pool keeps at least one open. After an outage the pool
    tries again with a backoff that doubles (1, 2, 4 ... s: half a minute and more after a long
    one); a request that finds it still waiting while the server answers again gets a new pool."""

    MAX_SIZE = 8  # a console's requests are short; more than this wait for one (WAIT seconds)
    WAIT = 2.0  # then the request is refused (503): the server is away, or every connection busy

    def __init__(self, url: str, node: str) -> None:
        import logging

        # The pool would log each failed reconnection while the server is away; the requests it
        # refuses meanwhile (503) and `status` already say so.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        connect(url, node=node).close()  # the URL checked, the schema migrated: once, here
        self.url = url
        self.where = where(url)
        self._renewing = threading.Lock()
        self.pool = self._new_pool()

    def _new_pool(self) -> Any:
        from psycopg_pool import ConnectionPool

        return ConnectionPool(
            self.url, min_size=1, max_size=self.MAX_SIZE, timeout=self.WAIT, open=True, name="ombridge",
            connection_class=Connection, check=ConnectionPool.check_connection, kwargs=_settings())

    @contextmanager
    def lend(self) -> Iterator[Connection]:
        """One connection for the ``with`` block (a :class:`StoreError` when none comes in time)."""
        from psycopg_pool import PoolTimeout

        pool = self.pool
        try:
            conn = pool.getconn()
        except PoolTimeout:
            pool, conn = self._renewed(pool)
        try:
            yield conn
        finally:
            pool.putconn(conn)  # (rolled back if a transaction was left open; dropped if broken, or
            # closed if its pool was replaced meanwhile)

    def _renewed(self, waited: Any) -> tuple[Any, Connection]:
        """(a new pool, a connection of it) once ``waited`` gave none in time although it may grow
        (its reconnection backs off after an outage) and the server answers a connection of our
        own; else the request is refused. A pool at its size with every connection lent is busy,
        not stale: it is kept."""
        stats = waited.get_stats()
        refused = StoreUnavailable(f"the event core in {self.where} is unreachable (no connection within "
                                   f"{self.WAIT:.0f}s)")
        if stats.get("pool_size", 0) >= stats.get("pool_max", self.MAX_SIZE):
            raise refused
        try:
            Connection.connect(self.url, **_settings()).close()
        except psycopg.OperationalError:
            raise refused from None
        with self._renewing:
            if self.pool is waited:  # (another request may have renewed it already)
                self.pool = self._new_pool()
                waited.close(timeout=0)
            pool = self.pool
        return pool, pool.getconn()

    def close(self) -> None:
        """Close every connection (the listener stops)."""
        self.pool.close()

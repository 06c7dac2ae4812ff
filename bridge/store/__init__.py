"""The event core's store, one object per process: :class:`Store`.

A process (the supervisor, a command, the listener) makes one :class:`Store` for its home and
passes it to everything that touches the event core. The store knows where the event core is
(its URL and this node's name, read once), opens the connections (:meth:`Store.connect`), keeps
the long-lived ones working through one reconnect path (:meth:`Store.using`), lends short ones
to requests (:meth:`Store.lend`), and answers what the store can do (:attr:`Store.shared`,
:attr:`Store.checkpoints`, :attr:`Store.backs_up`) instead of which database it is. A database
that cannot be reached is one error at the seam, :class:`~bridge.errors.StoreUnavailable`;
``except store.failures()`` catches every failure of the store (:mod:`bridge.store.failures`).

By default the event core is one file under the home (``datafiles/ombridge.db``,
:mod:`bridge.store.sqlitestore`; its schema :mod:`bridge.store.sqlschema`). With a
``postgresql://`` store URL (``--store``, ``OMBRIDGE_STORE`` or ``[store] url`` in
``conf/ombridge.conf``) it lives in PostgreSQL instead (:mod:`bridge.store.pgstore`, its schema
:mod:`bridge.store.pgschema`); what differs in SQL is :mod:`bridge.store.dialect`'s. Nothing
above ``bridge/store/`` names a driver (tests/test_structure.py). docs/store.md describes every
table for operators; docs/multinode.md the PostgreSQL store.
"""

from __future__ import annotations

import _thread
import os
import time

TYPE_CHECKING = False  # typing is not imported at run time: `ombridge send` starts faster
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

from .. import conf
from ..errors import StoreError, StoreUnavailable
from ..home import DB_FILE, Home
from . import dialect, sqlitestore
from .dialect import BUSY_TIMEOUT, POSTGRESQL, SQLITE, Busy
from .failures import failures, unreachable
from .sqlitestore import Connection, Row, open_file, open_readonly

__all__ = ["BUSY_TIMEOUT", "Busy", "Connection", "Row", "Store", "StoreUnavailable", "connect", "failures",
           "open_file", "open_readonly", "transaction", "unreachable"]
STORE_ENV = "OMBRIDGE_STORE"  # the store URL; `ombridge --store URL` sets it for what it starts


def now(conn: Any = None) -> float:
    """Time as the event core keeps it (seconds since the epoch): when a delivery is due, until
    when a claim holds. On SQLite (one box, one clock) and without ``conn``, this machine's
    clock; on PostgreSQL, this machine's corrected by how far it is off the database's (measured
    by the connection, :meth:`bridge.store.pgstore.Connection.clock_skew`): a node whose clock is
    ahead neither delays the Closes it stores nor takes claims before they are due."""
    skew = getattr(conn, "clock_skew", None)
    return time.time() if skew is None else time.time() - skew()




def _root(home: Home | str) -> str:
    return os.fspath(home.root if isinstance(home, Home) else home)


def choose(url: str | None) -> None:
    """Make ``url`` the store of this process and of everything it starts (``ombridge --store``:
    a supervisor, its perl child and the ``ombridge send`` of subscribers then all use it)."""
    if url is not None:
        os.environ[STORE_ENV] = url


def location(home: Home | str) -> tuple[str, str]:
    """The store URL of a home ('' for its SQLite file) and the name of this node in it ('' when
    not set), by precedence: ``--store`` or ``OMBRIDGE_STORE``, then ``[store]`` in
    ``conf/ombridge.conf``, then the default."""
    root = _root(home)
    url = os.environ.get(STORE_ENV, "")
    try:
        section = conf.table(root, "store")
    except conf.ConfError as exc:  # (the store's settings: a store error, as before the one reader)
        raise StoreError(str(exc)) from None
    values = {name: section.get(name, "") for name in ("url", "node")}
    if any(not isinstance(v, str) for v in values.values()):
        raise StoreError(f"{conf.path(root)}: [store] url and node must be strings")
    return url or values["url"], values["node"]


def default_node(root: str) -> str:
    """The name of a home's node when ``[store] node`` names none: ``<hostname>:<home>`` (a ``#``,
    which separates a claim's node from its pid, becomes ``_``)."""
    return f"{os.uname().nodename}:{root}".replace("#", "_")


def is_postgresql(url: str) -> bool:
    """Whether the store URL ``url`` names a PostgreSQL database (a URL, or libpq's key=value)."""
    return url.startswith(("postgresql://", "postgres://")) or "=" in url


class Store:
    """The event core of one home, as one process uses it (see the module).

    Made once per process, cheaply (no connection is opened until asked; ``ombridge send`` makes
    one too); raises :class:`~bridge.errors.StoreError` when the store's settings cannot be read
    or name an unknown store."""

    def __init__(self, home: Home | str) -> None:
        self.root = _root(home)
        self.url, self.configured_node = location(self.root)
        self.node = self.configured_node or default_node(self.root)  # this node's name in a shared store
        if is_postgresql(self.url):
            self.dialect = POSTGRESQL
        elif self.url in ("", "sqlite:"):
            self.dialect = SQLITE
        else:
            raise StoreError(f"unknown store {self.url!r}: a postgresql://USER@HOST/DATABASE URL, or sqlite: for "
                             "the home's own file (the default)")
        self._lender: Any = None  # PostgreSQL: the pool lend() lends from (made at the first request)
        self._lender_lock = _thread.allocate_lock()

    # -- what the store can do (asked instead of "which database is this") --

    @property
    def shared(self) -> bool:
        """Whether several nodes may share it (nodes, leases across hosts, LISTEN/NOTIFY wake-ups)."""
        return self.dialect.shared

    @property
    def checkpoints(self) -> bool:
        """Whether its log is copied back by a checkpoint of ours (:func:`checkpoint`)."""
        return self.dialect.checkpoints

    @property
    def backs_up(self) -> bool:
        """Whether ``ombridge backup`` copies it (a file; a database server is pg_dump's)."""
        return not self.dialect.shared

    @property
    def file(self) -> str:
        """The SQLite file of the event core ('' in a database server)."""
        return "" if self.dialect.shared else os.path.join(self.root, DB_FILE)

    def describe(self) -> str:
        """The event core as an operator names it: its SQLite file, or "the database D on H:P"
        (never a password)."""
        if not self.dialect.shared:
            return self.file
        from . import pgstore

        return pgstore.where(self.url)

    # -- connections --

    def connect(self, *, create: bool = True, lane: bool = False) -> Connection:
        """A new connection to the event core, in autocommit mode (write through
        :func:`transaction`): the home's SQLite file, created or migrated first when needed, or
        the PostgreSQL database, its schema migrated first. Raises
        :class:`~bridge.errors.StoreUnavailable` while the database cannot be reached.

        Every commit is synced to disk: a send that returned survives a power cut. ``lane=True``
        is for the Event Manager's lanes, whose writes are all :mod:`bridge.eventcore.deliveries`'
        claims and acknowledgements:

        - they do not wait for the disk (SQLite ``synchronous=NORMAL`` in WAL, PostgreSQL
          ``synchronous_commit=off``): they survive any crash of a process, and a power cut (or a
          crash of the server) can only forget the last ones, so that those deliveries are made
          again — a duplicate, never a loss;
        - SQLite: no foreign-key checks (a fifth of the work of recording a Close: those writes
          change no key), no checkpoints in a commit (the supervisor checkpoints in a thread of
          its own, :func:`checkpoint`), statement journals in memory.
        """
        if self.dialect.shared:
            from . import pgstore

            return pgstore.connect(self.url, node=self.node, lane=lane)
        return sqlitestore.connect(self.file, create=create, lane=lane)

    def reopen(self, conn: Any, *, lane: bool = False) -> Any:
        """``conn`` if it still works, else a new connection (the old one closed; None: none
        yet). Raises as :meth:`connect` does while the database cannot be reached."""
        if conn is not None and not broken(conn):
            return conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
                pass
        return self.connect(lane=lane)

    def using(self, conn: Any, work: Callable[[Any], T], *, lane: bool = False) -> tuple[Any, T]:
        """``work(conn)`` on a working connection: the one reconnect path of every long-lived
        connection (lanes, the services, the sync back, the listener's committer). ``conn``
        (None: none yet) is replaced by a new one when the database restarted; one that the
        server dropped while it lay idle only says so at its first statement, so then ``work``
        gets one new connection and one more try. Returns the connection to keep and what
        ``work`` returned; a database still away is :class:`~bridge.errors.StoreUnavailable`."""
        conn = self.reopen(conn, lane=lane)
        try:
            return conn, work(conn)
        except unreachable():
            if not broken(conn):
                raise
        conn = self.reopen(conn, lane=lane)
        try:
            return conn, work(conn)
        except dialect.unavailable() as exc:
            raise StoreUnavailable(f"the event core in {self.describe()} is unreachable "
                                   f"({' '.join(str(exc).split())})") from exc

    def lend(self) -> Any:
        """A connection for one short request (a console page, ``/metrics``), as a ``with``
        block: on PostgreSQL lent by this store's pool (:class:`bridge.store.pgstore.Lender`,
        made at the first request), on SQLite a new connection (opening the file costs ~0.1 ms),
        closed after. Raises as :meth:`connect` does while the store cannot be reached."""
        if not self.dialect.shared:
            return _closing(self.connect())
        lender = self._lender
        if lender is None:  # made outside the lock: a server that does not answer holds up one request, not all
            from .pgstore import Lender

            made = Lender(self.url, self.node)
            with self._lender_lock:
                if self._lender is None:
                    self._lender = made
                lender = self._lender
            if lender is not made:
                made.close()
        return lender.lend()

    def close(self) -> None:
        """Close what this store keeps open (the pool :meth:`lend` made); it may be used again."""
        with self._lender_lock:
            lender, self._lender = self._lender, None
        if lender is not None:
            lender.close()


class _closing:  # noqa: N801 - contextlib alone costs `ombridge send` ~1 ms
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def connect(home: Home | str, *, create: bool = True, lane: bool = False) -> Connection:
    """A new connection to the event core of ``home`` (:meth:`Store.connect`), for a process
    that needs exactly one (``ombridge send``, a test)."""
    return Store(home).connect(create=create, lane=lane)


def describe(home: Home | str) -> str:
    """The event core of ``home`` as an operator names it (:meth:`Store.describe`)."""
    return Store(home).describe()


class transaction:  # noqa: N801 - used like a function: `with transaction(conn):`
    """One write transaction, begun by the connection's dialect (:meth:`bridge.store.dialect.Dialect.begin`):
    on SQLite ``BEGIN IMMEDIATE`` (writers queue for the lock, they do not fail), on PostgreSQL
    ``BEGIN`` (row locks). ``wait=False`` raises :class:`Busy` rather than wait for another
    writer; ``catalog=True`` marks a catalog write ("check, then insert": topics, subscribers,
    contexts, users), which PostgreSQL serializes with an advisory lock.

    On SQLite, threads of one process queue on the event core's in-process lock (handed over the
    instant it is free) instead of meeting in SQLite's busy handler, which sleeps 10 to 100 ms at
    a time once a wait gets long, and a writer of another process polls for SQLite's lock every
    fraction of a millisecond. So a sender committing thousands of events and the Event Manager
    recording outcomes take turns in milliseconds instead of naps. A class rather than a
    contextlib generator: contextlib alone costs ``ombridge send`` ~1 ms.
    """

    def __init__(self, conn: Connection, *, wait: bool = True, catalog: bool = False) -> None:
        self.conn = conn
        self.lock = getattr(conn, "write_lock", None)
        self.dialect = dialect.of(conn)
        self.wait = wait  # False: raise Busy at once if another writer holds the lock
        self.catalog = catalog

    def __enter__(self) -> Connection:
        conn = self.conn
        if self.lock is not None and not self.lock.acquire(self.wait):
            raise Busy  # (threads of this process queue here, handed the lock at once)
        try:
            self.dialect.begin(conn, self.wait, self.catalog)
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise
        return conn

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        try:
            if kind is not None:
                self.conn.execute("ROLLBACK")
            else:
                try:
                    self.conn.execute("COMMIT")
                except BaseException as exc:
                    exc.at_commit = True  # type: ignore[attr-defined]  # (see failed_at_commit)
                    raise
        finally:
            if self.lock is not None:
                self.lock.release()
        if not self.wait and isinstance(value, BaseException) and self.dialect.busy(value):
            raise Busy from value  # (PostgreSQL: a row lock not granted in time)


def failed_at_commit(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by a transaction's COMMIT itself. Its outcome is then unknown
    when the database went away meanwhile (PostgreSQL may have committed before the connection
    broke): a sender must say so instead of inviting a blind re-send."""
    return any(getattr(e, "at_commit", False) for e in (exc, exc.__cause__, exc.__context__) if e is not None)


def broken(conn: Any) -> bool:
    """Whether ``conn`` can no longer be used (a PostgreSQL connection whose server went away or
    restarted); a SQLite connection never breaks so."""
    return bool(getattr(conn, "closed", False))


def checkpoint(conn: Connection) -> None:
    """Copy what a SQLite WAL holds back into the database, without waiting for or blocking
    anyone. PostgreSQL checkpoints on its own: nothing to do there (:attr:`Store.checkpoints`)."""
    if dialect.of(conn).checkpoints:
        sqlitestore.checkpoint(conn)


def integrity(conn: Connection, quick: bool = False) -> list[str]:
    """What the store's integrity check finds wrong with the event core ([] when it is sound).
    PostgreSQL guards its own pages: the supervisor's ``quick`` check at start finds nothing
    there, and the full one (``check --db``) is :func:`bridge.store.pgschema.check`."""
    if dialect.of(conn) is SQLITE:
        return sqlitestore.integrity(conn, quick)
    if quick:
        return []
    from . import pgschema

    return pgschema.check(conn)


def recovery(conn: Any) -> str:
    """Where the procedure for what :func:`integrity` found is written, for this store."""
    if dialect.of(conn) is SQLITE:
        return "follow \"Recovering a damaged event core\" in docs/operations.md"
    return "each line says what repairs it; \"Checking the database\" in docs/multinode.md says more"


def backup(conn: Connection, target: str) -> None:
    """Copy the event core to ``target`` (owner-only, never over an existing file) while it is in
    use; refused for a PostgreSQL store (:attr:`Store.backs_up`)."""
    if dialect.of(conn).shared:
        raise StoreError("the event core is in PostgreSQL: back it up with pg_dump, or store copy")
    sqlitestore.backup(conn, target)

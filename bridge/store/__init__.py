"""The event core's store: which one (:func:`connect`), and the SQLite file's settings (its
schema and migrations: :mod:`bridge.store.sqlschema`).

By default the event core is one file under the home (``datafiles/ombridge.db``), WAL, a busy
timeout, owner-only. The schema is created and migrated with sqlite-utils (imported only when a
migration is due, so that ``ombridge send`` stays light); the hot paths (send, claim) use the
stdlib connection directly. With a ``postgresql://`` store URL (``--store``, ``OMBRIDGE_STORE`` or
``[store] url`` in ``conf/ombridge.conf``) it lives in PostgreSQL instead (:mod:`bridge.store.pgstore`);
what differs between the two is :mod:`bridge.store.dialect`'s. docs/store.md describes every table for
operators; docs/multinode.md the PostgreSQL store.
"""

from __future__ import annotations

import _thread  # (C-level, free to import: `ombridge send` pays nothing for the write lock)
import os
import sqlite3
import time

TYPE_CHECKING = False  # typing is not imported at run time: `ombridge send` starts faster
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

from .. import conf
from ..errors import StoreError
from ..home import DB_FILE, Home
from . import dialect
from .dialect import BUSY_TIMEOUT, SQLITE, Busy
from .failures import failures, unreachable
from .sqlschema import SCHEMA_VERSION

__all__ = ["BUSY_TIMEOUT", "Busy", "Connection", "connect", "failures", "transaction", "unreachable"]
Connection = sqlite3.Connection  # (for annotations above the seam: either store's connection reads like it)
Row = sqlite3.Row  # (a row of either store reads like it: by name and by index)
STORE_ENV = "OMBRIDGE_STORE"  # the store URL; `ombridge --store URL` sets it for what it starts

# One write lock per event core per process. Threads of one process (the supervisor's lanes and
# the HTTP listener's committer) queue on it and are handed the write lock the instant it is
# free, instead of meeting in SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between
# retries and so turns contention into idle milliseconds. Other processes still meet there.
_WRITE_LOCKS: dict[str, Any] = {}


class _Connection(sqlite3.Connection):
    """A connection that knows its event core's in-process write lock."""

    write_lock: Any = None
    dialect = SQLITE


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


def describe(home: Home | str) -> str:
    """The event core of a home as an operator names it: its SQLite file, or "the database D on
    H:P" (never a password)."""
    root = _root(home)
    url, _ = location(root)
    if url in ("", "sqlite:"):
        return os.path.join(root, DB_FILE)
    from . import pgstore

    return pgstore.where(url)


def connect(home: Home | str, *, create: bool = True, lane: bool = False) -> sqlite3.Connection:
    """Open the event core of a home (a :class:`Home` or its root path): the SQLite file of the
    home, created or migrated first when needed, or the PostgreSQL database its store URL names
    (:func:`location`; :func:`bridge.store.pgstore.connect`). The connection is in autocommit mode;
    write through :func:`transaction`.

    Every commit is synced to disk (``synchronous=FULL``): a send that returned survives a power
    cut. ``lane=True`` is for the Event Manager's lanes, whose writes are all
    :mod:`bridge.eventcore.deliveries`' claims and acknowledgements:

    - ``synchronous=NORMAL`` (WAL): they survive any crash of a process, and a power cut can only
      forget the last ones, so that those deliveries are made again — a duplicate, never a loss —
      while a batch of Closes does not wait for an fsync per record;
    - no foreign-key checks (a fifth of the work of recording a Close): those writes change no
      key, and record an attempt only for a delivery seen in the same transaction;
    - no checkpoints: SQLite copies the WAL back into the database in the commit that crosses
      1,000 pages, tens of milliseconds while perl waits; the supervisor checkpoints in a thread
      of its own instead (:func:`checkpoint`);
    - statement journals in memory (a multi-row write inside a transaction keeps one), not in a
      temporary file each time.
    """
    root = _root(home)
    url, node = location(root)
    if is_postgresql(url):
        from . import pgstore

        return pgstore.connect(url, node=node or default_node(root), lane=lane)
    if url not in ("", "sqlite:"):
        raise StoreError(f"unknown store {url!r}: a postgresql://USER@HOST/DATABASE URL, or sqlite: for the "
                         "home's own file (the default)")
    return _sqlite(os.path.join(root, DB_FILE), create, lane)


def is_postgresql(url: str) -> bool:
    """Whether the store URL ``url`` names a PostgreSQL database (a URL, or libpq's key=value)."""
    return url.startswith(("postgresql://", "postgres://")) or "=" in url


class lend:  # noqa: N801 - used like a function: `with lend(home) as conn:`
    """A connection to the event core of ``home`` for one short request (a console page,
    ``/metrics``): on PostgreSQL lent by this process's pool (:class:`bridge.store.pgstore.Lender`,
    made at the first request), on SQLite a new connection (opening the file costs ~0.1 ms),
    closed after. Raises as :func:`connect` does while the store cannot be reached."""

    def __init__(self, home: Home | str) -> None:
        self.root = _root(home)
        self.conn: Any = None
        self.lent: Any = None

    def __enter__(self) -> Any:
        url, node = location(self.root)
        if not is_postgresql(url):
            self.conn = connect(self.root)
            return self.conn
        lender = _LENDERS.get((url, node))
        if lender is None:  # made outside the lock: a server that does not answer holds up one request, not all
            from .pgstore import Lender

            made = Lender(url, node or default_node(self.root))
            with _LENDERS_LOCK:
                lender = _LENDERS.setdefault((url, node), made)
            if lender is not made:
                made.close()
        self.lent = lender.lend()
        return self.lent.__enter__()

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self.lent is not None:
            self.lent.__exit__(kind, value, traceback)
        else:
            self.conn.close()


def close_lent() -> None:
    """Close the pools :class:`lend` made (the listener stops)."""
    with _LENDERS_LOCK:
        lenders = list(_LENDERS.values())
        _LENDERS.clear()
    for lender in lenders:
        lender.close()


_LENDERS: dict[tuple[str, str], Any] = {}
_LENDERS_LOCK = _thread.allocate_lock()


def open_readonly(path: str) -> sqlite3.Connection:
    """A SQLite file of the operator's, read only (a context table kept in a file of its own)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def open_file(path: str) -> sqlite3.Connection:
    """The event core in the SQLite file ``path`` (any file, not only a home's: ``ombridge store
    copy --to sqlite:PATH``), created owner-only and migrated first when needed. Unlike a home's
    ``datafiles/``, its directory is left as it was: no mode change, no lock file left behind."""
    path = os.path.abspath(path)
    lock = os.path.join(os.path.dirname(path), ".migrate.lock")
    litter = not os.path.exists(lock)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        return _sqlite(path, False, False)
    finally:
        if litter and os.path.exists(lock):
            os.unlink(lock)


def _sqlite(path: str, create: bool, lane: bool) -> sqlite3.Connection:
    if not os.path.exists(path):
        if not create:
            raise StoreError(f"no event core at {path}")
        datafiles = os.path.dirname(path)
        if not os.path.isdir(datafiles):  # (a directory that exists is the operator's: /tmp stays /tmp)
            os.makedirs(datafiles, exist_ok=True)
            os.chmod(datafiles, 0o700)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)  # owner-only before sqlite writes a byte
        os.close(fd)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False,
                               factory=_Connection)
        conn.write_lock = _WRITE_LOCKS.setdefault(path, _thread.RLock())
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable event core: {exc}") from exc
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(f"{path} has schema version {version}; this ombridge knows up to {SCHEMA_VERSION}: upgrade ombridge")
    if version < SCHEMA_VERSION:
        from .sqlschema import migrate

        migrate(os.path.dirname(path), conn)
    if lane:  # (after a migration, whose index builds may sort more than memory should hold)
        for pragma in ("foreign_keys = OFF", "synchronous = NORMAL", "wal_autocheckpoint = 0", "temp_store = MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
    return conn


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

    def __init__(self, conn: sqlite3.Connection, *, wait: bool = True, catalog: bool = False) -> None:
        self.conn = conn
        self.lock = getattr(conn, "write_lock", None)
        self.dialect = dialect.of(conn)
        self.wait = wait  # False: raise Busy at once if another writer holds the lock
        self.catalog = catalog

    def __enter__(self) -> sqlite3.Connection:
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


def reopen(home: Home | str, conn: Any, *, lane: bool = False) -> Any:
    """``conn`` if it still works, else a new connection to the same store (the old one closed);
    raises as :func:`connect` does while the store cannot be reached."""
    if conn is not None and not broken(conn):
        return conn
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped anyway
            pass
    return connect(home, lane=lane)


def using(home: Home | str, conn: Any, work: Callable[[Any], T], *, lane: bool = False) -> tuple[Any, T]:
    """``work(conn)`` on a working connection: the one reconnect path of every long-lived
    connection (lanes, chores, the sync back). ``conn`` (None: none yet) is replaced by a new one
    when the database restarted; one that the server dropped while it lay idle only says so at
    its first statement, so then ``work`` gets one new connection and one more try. Returns the
    connection to keep and what ``work`` returned; raises as ``work`` does otherwise."""
    conn = reopen(home, conn, lane=lane)
    try:
        return conn, work(conn)
    except unreachable():
        if not broken(conn):
            raise
    conn = reopen(home, conn, lane=lane)
    return conn, work(conn)


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy what the WAL holds back into the database, without waiting for or blocking anyone
    (a passive checkpoint: what readers still use is copied next time). PostgreSQL checkpoints
    on its own: nothing to do there."""
    if dialect.of(conn) is not SQLITE:
        return
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def integrity(conn: sqlite3.Connection, quick: bool = False) -> list[str]:
    """What SQLite's integrity check finds wrong with the event core ([] when it is sound).
    PostgreSQL guards its own pages: the supervisor's ``quick`` check at start finds nothing
    there, and the full one (``check --db``) is :func:`bridge.store.pgschema.check`."""
    if dialect.of(conn) is not SQLITE:
        if quick:
            return []
        from . import pgschema

        return pgschema.check(conn)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    # one problem a line ("*** in database main ***" is a heading, not a problem)
    problems = [line for row in rows for line in str(row).splitlines() if line and not line.startswith("***")]
    return [] if rows == ["ok"] else problems or rows


def recovery(conn: Any) -> str:
    """Where the procedure for what :func:`integrity` found is written, for this store."""
    if dialect.of(conn) is SQLITE:
        return "follow \"Recovering a damaged event core\" in docs/operations.md"
    return "each line says what repairs it; \"Checking the database\" in docs/multinode.md says more"


def backup(conn: sqlite3.Connection, target: str) -> None:
    """Copy the event core to ``target`` with SQLite's online backup (consistent while it is in
    use); the copy is owner-only. Refuses to overwrite an existing file, and a PostgreSQL store."""
    if dialect.of(conn) is not SQLITE:
        raise StoreError("the event core is in PostgreSQL: back it up with pg_dump, or store copy")
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # FileExistsError: never overwrite
    os.close(fd)
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy)
    finally:
        copy.close()

"""The event core in a SQLite file (the embedded default): its connections, and what only a
file can do (a checkpoint, an online backup, SQLite's integrity check). The schema and its
migrations are :mod:`bridge.store.sqlschema`'s; PostgreSQL's counterpart is
:mod:`bridge.store.pgstore`.

A home's file is ``datafiles/ombridge.db``, WAL, a busy timeout, owner-only.
"""

from __future__ import annotations

import _thread  # (C-level, free to import: `ombridge send` pays nothing for the write lock)
import fcntl
import os
import sqlite3

from ..errors import StoreError
from .dialect import BUSY_TIMEOUT, SQLITE
from .sqlschema import SCHEMA_VERSION

_WRITE_LOCKS: dict[str, WriteLock] = {}


class WriteLock:
    """The event core's write lock as writers queue for it, taken before SQLite's own.

    SQLite's busy handler sleeps 1, 2, 5, 10... ms between retries, so two writers that meet
    there turn contention into idle milliseconds. Instead, threads of one process queue on an
    in-process lock, and processes (the supervisor, its listener processes, ``ombridge send``,
    ``close -``) on an ``flock`` of ``<file>.writer`` (owner-only) beside the file: each writer is
    handed the lock the instant it is free. SQLite's own lock still guards the file (a writer
    that takes neither meets it as before); this one only orders the queue. Re-entrant."""

    def __init__(self, path: str, across_processes: bool = True) -> None:
        self._threads = _thread.RLock()
        self._depth = 0  # the holding thread's nested holds
        self._fd = -1
        self._path = path + ".writer" if across_processes else ""
        self._locked = False  # the file lock is held

    def acquire(self, blocking: bool = True) -> bool:
        """Take it (False at once when ``blocking`` is False and another writer holds it)."""
        if not self._threads.acquire(blocking):
            return False
        if self._depth == 0:
            try:
                self._locked = self._lock_file(blocking)
            except BlockingIOError:  # another process writes now
                self._threads.release()
                return False
        self._depth += 1
        return True

    def _lock_file(self, blocking: bool) -> bool:
        if self._fd < 0:
            if not self._path:
                return False
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:  # a read-only home: SQLite's own lock alone (which then refuses the write)
                return False
        fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True

    def release(self) -> None:
        """Give it back (the file lock with the last of a thread's nested holds)."""
        self._depth -= 1
        if self._depth == 0 and self._locked:
            self._locked = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


_LANE_PRAGMAS = ("foreign_keys = OFF", "synchronous = NORMAL", "wal_autocheckpoint = 0", "temp_store = MEMORY")
Row = sqlite3.Row  # (for annotations above the seam: a row of either store reads like it, by name and index)


class Connection(sqlite3.Connection):
    """A connection that knows its event core's write lock."""

    write_lock: WriteLock | None = None
    dialect = SQLITE


def connect(path: str, *, create: bool = True, lane: bool = False, queue: bool = True) -> Connection:
    """The event core in the file ``path``, created (owner-only, in an owner-only directory of
    its own when that is new) and migrated first when needed; in autocommit mode. See
    :meth:`bridge.store.Store.connect` for what ``lane`` changes; ``queue=False``: writers of
    other processes are not expected (no ``.writer`` file, :class:`WriteLock`)."""
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
                               factory=Connection)
        conn.write_lock = _WRITE_LOCKS.get(path) or _WRITE_LOCKS.setdefault(path, WriteLock(path, queue))
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
        for pragma in _LANE_PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
    return conn


def open_readonly(path: str) -> sqlite3.Connection:
    """A SQLite file of the operator's, read only (a context table kept in a file of its own)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def open_file(path: str) -> Connection:
    """The event core in the SQLite file ``path`` (any file, not only a home's: ``ombridge store
    copy --to sqlite:PATH``), created owner-only and migrated first when needed. Unlike a home's
    ``datafiles/``, its directory is left as it was: no mode change, no lock file left behind."""
    path = os.path.abspath(path)
    lock = os.path.join(os.path.dirname(path), ".migrate.lock")
    litter = not os.path.exists(lock)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        return connect(path, create=False, queue=False)
    finally:
        if litter and os.path.exists(lock):
            os.unlink(lock)


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy what the WAL holds back into the database, without waiting for or blocking anyone
    (a passive checkpoint: what readers still use is copied next time)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def integrity(conn: sqlite3.Connection, quick: bool = False) -> list[str]:
    """What SQLite's integrity check finds wrong with the file ([] when it is sound)."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check" if quick else "PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    # one problem a line ("*** in database main ***" is a heading, not a problem)
    problems = [line for row in rows for line in str(row).splitlines() if line and not line.startswith("***")]
    return [] if rows == ["ok"] else problems or rows


def backup(conn: sqlite3.Connection, target: str) -> None:
    """Copy the event core to ``target`` with SQLite's online backup (consistent while it is in
    use); the copy is owner-only. Refuses to overwrite an existing file."""
    fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # FileExistsError: never overwrite
    os.close(fd)
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy)
    finally:
        copy.close()

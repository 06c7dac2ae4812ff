"""``ombridge store copy --to URL``: a home's event core copied into another, empty store.

SQLite to PostgreSQL, and back (docs/multinode.md, "Moving a home to PostgreSQL"). The source is
the home's store as every command chooses it (:func:`bridge.store.location`); the target is a
``postgresql://`` URL (or libpq's ``key=value``), ``sqlite:PATH``, or ``sqlite:`` for the home's
own file. Refused, writing nothing: the target is the source, a URL holds a password, the home's
supervisor runs (its lock is held for the whole copy, so none starts meanwhile), a node of either
database is alive, or the target is not empty (:func:`holdings`).

The target is migrated to the current schema first, then filled in one transaction (all or
nothing): the built-in catalog the target was seeded with is replaced by the source's, and
every table of the event core (:data:`TABLES`), plus each context table that lives inside it,
is streamed in chunks (COPY on PostgreSQL) with its ids. The ``nodes`` table is not copied (it
describes processes, not events): each open claim is released instead, due again at its own
place in the queue, as a dead node's claims are (:mod:`bridge.eventcore.nodes`). PostgreSQL's id
sequences are then moved past the largest ids copied (SQLite's ``INTEGER PRIMARY KEY`` needs
nothing). This module is the one writer of ``subscriber_events`` and ``attempts`` besides
:mod:`bridge.eventcore.deliveries`: it only inserts whole rows, into a store nobody else uses yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from .. import store
from ..errors import AlreadyRunning, StoreError
from ..eventcore import builtins, claims, nodes
from ..home import Home
from ..model import ActionKind
from ..store import dialect, urls

# The event core in foreign-key order (a row's parents are copied before it).
TABLES = ("topics", "subscribers", "subscriber_pauses", "subscriber_topics", "event_filters", "contexts", "users",
          "events", "subscriber_events", "claims", "attempts", "omi_events", "console_sessions")
KEYS = {"topics": "name", "users": "name", "omi_events": "omi_id", "subscriber_pauses": "subscriber_id",
        "claims": "delivery_id"}  # others: id
CHUNK = 5_000  # rows read and written at a time: memory stays bounded for any size
# What ``ombridge init`` (or any command's first connection) creates itself: not "holding" anything.
SEED_TOPICS = builtins.SEED_TOPICS
SEED_ACTIONS = (ActionKind.BACKSYNC.value, ActionKind.OMI.value)
# Tables that must be empty, and what an operator calls their rows.
NOUNS = {"events": "event", "subscriber_events": "delivery", "claims": "claim", "attempts": "attempt", "users": "user",
         "subscriber_pauses": "paused subscriber",
         "console_sessions": "console session", "omi_events": "OMi mapping", "contexts": "context"}
_SEED_SUBSCRIBERS = f"SELECT id FROM subscribers WHERE system = 1 AND action IN ({', '.join('?' * len(SEED_ACTIONS))})"
_SEED_PAIRS = f"SELECT id FROM subscriber_topics WHERE subscriber_id IN ({_SEED_SUBSCRIBERS}) AND pattern IN " \
              f"({', '.join('?' * len(SEED_TOPICS))})"


@dataclass
class Copied:
    """What a copy did: from where to where, and how many rows of each table."""

    source: str
    target: str
    target_url: str
    counts: list[tuple[str, int]] = field(default_factory=list)
    released: int = 0  # open claims made due again


def copy(home: Home, to: str) -> Copied:
    """Copy the event core of ``home`` into the empty store ``to`` (see the module); returns
    what was copied. Raises :class:`StoreError` / :class:`UsageError` with one sentence, the
    target unchanged, when it refuses or fails."""
    source = store.Store(home)
    target_url = urls.target(home, to)
    source_name, target_name = source.describe(), urls.name_of(target_url)
    if urls.same(home, source.url, target_url):
        raise StoreError(f"{target_name} is the home's store already: copy it to another one")
    with _no_supervisor(home):
        src = source.connect()
        try:
            _refuse_live_nodes(src, source_name, "other nodes could be writing into it")
            with _new_file_undone(target_url):
                tgt = _open(source, target_url, target_name)  # (migrated to the current schema)
                try:
                    _refuse_live_nodes(tgt, target_name, "copy only into a store no node uses")
                    result = Copied(source_name, target_name, target_url)
                    _copy_all(src, tgt, result)
                    return result
                finally:
                    tgt.close()
        finally:
            src.close()


@contextmanager
def _new_file_undone(url: str) -> Iterator[None]:
    """A SQLite file the copy created is removed again when the copy fails."""
    path = urls.file_of(url)
    created = bool(path) and not os.path.exists(path)
    try:
        yield
    except BaseException:
        if created:
            for leftover in (path, path + "-wal", path + "-shm"):
                with suppress(OSError):
                    os.unlink(leftover)
        raise


@contextmanager
def _no_supervisor(home: Home) -> Iterator[None]:
    """Refuse while the home's supervisor runs; hold its lock (the pid file's) meanwhile, so
    that none starts until the copy is over."""
    from ..channel import PIDFILE, lock_home

    path = home.run_dir / PIDFILE
    existed = path.exists()
    try:
        fd = lock_home(home)
    except AlreadyRunning as exc:
        raise StoreError(f"ombridge is running in {home.root} (pid {exc.pid or '?'}): `ombridge stop` first, "
                         "then copy") from None
    try:
        yield
    finally:
        if not existed:
            path.unlink(missing_ok=True)
        os.close(fd)


def _refuse_live_nodes(conn: Any, name: str, why: str) -> None:
    if not conn.dialect.shared:
        return  # the home's one node: its supervisor was checked
    alive = [n["name"] for n in nodes.listing(conn) if n["alive"]]
    if alive:
        raise StoreError(f"{name} has live nodes ({', '.join(alive)}): stop them first; {why}")


def _open(source: store.Store, url: str, name: str) -> Any:
    try:
        return urls.open_url(url, source.node)  # (who applied the target's migrations: this node)
    except OSError as exc:
        raise StoreError(f"{name} cannot be created: {exc.strerror or exc}") from None


def holdings(conn: Any) -> list[str]:
    """What makes the store of ``conn`` not empty, as phrases ("12 events") ([] when empty):
    any event, delivery, attempt, user, console session, OMi mapping or context, or any
    topic, subscriber, subscriber topic or filter beyond the built-in ones ombridge creates."""
    def count(sql: str, *args: Any) -> int:
        return int(conn.execute(sql, args).fetchone()[0])

    found = [phrase(n, what) for table, what in NOUNS.items() if (n := count(f"SELECT count(*) FROM {table}"))]
    topics = ", ".join("?" * len(SEED_TOPICS))
    extra = (("topic", count(f"SELECT count(*) FROM topics WHERE name NOT IN ({topics})", *SEED_TOPICS)),
             ("subscriber", count(f"SELECT count(*) FROM subscribers WHERE id NOT IN ({_SEED_SUBSCRIBERS})",
                                   *SEED_ACTIONS)),
             ("subscriber topic", count(f"SELECT count(*) FROM subscriber_topics WHERE id NOT IN ({_SEED_PAIRS})",
                                         *SEED_ACTIONS, *SEED_TOPICS)),
             ("event filter", count(f"SELECT count(*) FROM event_filters WHERE subscriber_topic_id NOT IN "
                                     f"({_SEED_PAIRS})", *SEED_ACTIONS, *SEED_TOPICS)))
    return found + [phrase(n, what) + " of its own" for what, n in extra if n]


def phrase(n: int, what: str) -> str:
    """How many rows, in words: "1 event", "1,234 deliveries"."""
    many = what[:-1] + "ies" if what.endswith("y") else what + "s"
    return f"{n:,} {what if n == 1 else many}"


def _copy_all(src: Any, tgt: Any, result: Copied) -> None:
    try:
        with _snapshot(src), store.transaction(tgt, catalog=True):
            held = holdings(tgt)
            if held:
                raise StoreError(f"{result.target} holds {', '.join(held)}: copy only into an empty store")
            for table in ("event_filters", "subscriber_topics", "subscribers", "topics"):  # (the seed; no pause)
                tgt.execute(f"DELETE FROM {table}")
            for table in TABLES:
                result.counts.append((table, _copy_table(src, tgt, table)))
            # No node of the target holds a claim: each is due again at its own place in the queue.
            result.released = claims.end_owners(tgt, "", ended_too=True)  # ("": every owner)
            for table in _context_tables(src):
                result.counts.append((table, _copy_context_table(src, tgt, table)))
            _move_sequences(src, tgt)
    except store.failures() as exc:
        reason = " ".join(str(exc).split())
        raise StoreError(f"the copy into {result.target} failed ({reason}); nothing was copied: "
                         "the target is as it was") from None


@contextmanager
def _snapshot(conn: Any) -> Iterator[None]:
    """One read transaction on the source: every table read as of one instant."""
    conn.dialect.begin_snapshot(conn)
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def _columns(src: Any, tgt: Any, table: str) -> list[str]:
    """The columns of ``table``, the same in both schemas (else the copy says so)."""
    mine, theirs = src.dialect.columns(src, table), tgt.dialect.columns(tgt, table)
    if set(mine) != set(theirs):
        raise StoreError(f"table {table} has the columns {', '.join(mine)} in the source but "
                         f"{', '.join(theirs)} in the target: this ombridge cannot copy between them")
    return mine


def _copy_table(src: Any, tgt: Any, table: str) -> int:
    columns = _columns(src, tgt, table)
    return _stream(src, tgt, table, columns, KEYS.get(table, "id"))


def _stream(src: Any, tgt: Any, table: str, columns: list[str], order: str, change: Any = None) -> int:
    """Copy every row of ``table`` (``columns``) in the order of the SQL ``order``, in chunks,
    ``change`` applied to each row."""
    names = ", ".join(dialect.quote(c) for c in columns)
    select = f"SELECT {names} FROM {dialect.quote(table)} ORDER BY {order}"
    cur = src.dialect.stream(src, f"ombridge_copy_{table}")
    cur.execute(select)
    total = 0
    while True:
        rows = cur.fetchmany(CHUNK)
        if not rows:
            break
        rows = [tuple(r) if change is None else change(tuple(r)) for r in rows]
        tgt.dialect.insert_rows(tgt, dialect.quote(table), names, rows)
        total += len(rows)
    cur.close()
    return total


def _context_tables(src: Any) -> list[str]:
    """The context tables inside the event core (a context without a file), those that exist."""
    names = sorted({r[0] for r in src.execute("SELECT table_name FROM contexts WHERE db_path IS NULL "
                                              "OR db_path = ''")})
    return [n for n in names if n not in TABLES and n != "nodes" and src.dialect.columns(src, n)]


def _copy_context_table(src: Any, tgt: Any, table: str) -> int:
    """Create ``table`` in the target with the source's column names and copy its rows. Every
    column is text on either side (lookups compare and substitute text anyway): on SQLite a
    TEXT column's affinity still matches a key's number to its text (12 = '12'), which a column
    without a type would not."""
    columns = src.dialect.columns(src, table)
    if tgt.dialect.columns(tgt, table):
        raise StoreError(f"the target holds a table {table} already: copy only into an empty store")
    tgt.execute(f"CREATE TABLE {dialect.quote(table)} ({', '.join(dialect.quote(c) + ' TEXT' for c in columns)})")
    as_text = None if tgt.dialect.column_affinity else (lambda row: tuple(_text(v) for v in row))
    order = src.dialect.insertion_order(columns[0])
    return _stream(src, tgt, table, columns, order, as_text)


def _text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _move_sequences(src: Any, tgt: Any) -> None:
    """Each generated id of the target past the largest the source ever handed out, deleted
    rows included (``pgschema.check`` looks for this): no id shown before the copy comes back."""
    for table in TABLES:
        if "id" not in tgt.dialect.columns(tgt, table) or table == "console_sessions":
            continue  # (keyed by a name or an OMi id; a console session's id is a sha256)
        tgt.dialect.keep_high_water(tgt, table, src.dialect.high_water(src, table))
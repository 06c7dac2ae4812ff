"""Where the two halves meet: the backsync as a system subscriber of the event core.

Closed events are ``event/update`` events whose key has ``STATE`` = ``closed``; the built-in
subscriber (system indicator 1, action ``backsync``) is attached to that topic with that filter,
and the Event Manager delivers its subscriber events as ``OMBackSync('Close', &ID)`` calls in the
persistent perl child. A script that does not compile is reported as an ``ombacksync/error``
event (stored even when nobody listens), as the connector's ombacksync did.
"""

from __future__ import annotations

import json
import sqlite3

from .errors import UsageError
from .events import SendResult, send, send_many
from .store import now, transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

UPDATE_TOPIC = "event/update"
ERROR_TOPIC = "ombacksync/error"
OMI_EVENT_TOPIC = "omi/event"
DESCRIPTION = "ombacksync: OMBackSync('Close', &ID) for closed events, in the persistent perl child"
CLOSE_TIMEOUT = 30.0  # seconds one OMBackSync call may take (the perl host's per-call timeout)
CLOSE_RETRIES = 10

_TOPICS = [
    (UPDATE_TOPIC, ["ID", "STATE"], "an event changed; STATE closed means OMBackSync('Close', ID) is called"),
    (ERROR_TOPIC, ["FILE", "MESSAGE"], "ombacksync stopped: its script does not compile or Init failed"),
    (OMI_EVENT_TOPIC, ["ID"], "OMi forwarded an event (POST <base>/event); ID is the external id ombridge answered"),
]


def ensure_topics(conn: sqlite3.Connection) -> None:
    """Define the built-in topics that are missing (a home created by an older ombridge lacks the newer ones)."""
    known = {r[0] for r in conn.execute("SELECT name FROM topics WHERE name IN (%s)" % ",".join("?" * len(_TOPICS)),
                                        [name for name, _, _ in _TOPICS])}
    if len(known) == len(_TOPICS):
        return
    with transaction(conn):
        _insert_topics(conn)


def _insert_topics(conn: sqlite3.Connection) -> None:
    at = now()
    for name, fields, description in _TOPICS:
        conn.execute("INSERT OR IGNORE INTO topics (name, description, key_fields, created_at) VALUES (?, ?, ?, ?)",
                     (name, description, json.dumps(fields), at))


def ensure_backsync(conn: sqlite3.Connection) -> int:
    """Create the built-in topics and the backsync system subscriber if missing; returns its id."""
    row = conn.execute("SELECT id FROM subscribers WHERE system = 1 AND action = 'backsync'").fetchone()
    if row is not None:
        return int(row[0])
    at = now()
    with transaction(conn):
        row = conn.execute("SELECT id FROM subscribers WHERE system = 1 AND action = 'backsync'").fetchone()
        if row is not None:  # another process created it meanwhile
            return int(row[0])
        _insert_topics(conn)
        sid = conn.execute(
            "INSERT INTO subscribers (description, system, disabled, action, target, timeout, retries, created_at) "
            "VALUES (?, 1, 0, 'backsync', '', ?, ?, ?)", (DESCRIPTION, CLOSE_TIMEOUT, CLOSE_RETRIES, at)).lastrowid
        st = conn.execute("INSERT INTO subscriber_topics (subscriber_id, pattern, synchronized, description) "
                          "VALUES (?, ?, 0, 'closed events')", (sid, UPDATE_TOPIC)).lastrowid
        conn.execute("INSERT INTO event_filters (subscriber_topic_id, variable, regex, description) "
                     "VALUES (?, 'STATE', 'closed', 'only closed events')", (st,))
        return int(sid or 0)


def close_events(conn: sqlite3.Connection, ids: Iterable[str], *, cwd: str | None = None,
                 on_stored: Callable[[], None] | None = None) -> list[SendResult]:
    """Send ``event/update {"ID": id, "STATE": "closed"}`` for every ID, all in one transaction."""
    items = []
    for event_id in ids:
        if event_id == "":
            raise UsageError("an ID must not be empty")
        items.append((UPDATE_TOPIC, {"ID": event_id, "STATE": "closed"}))
    if not items:
        raise UsageError("no IDs to close")
    ensure_backsync(conn)
    return send_many(conn, items, cwd=cwd, on_stored=on_stored)


def report_error(conn: sqlite3.Connection, script: str, message: str, *, cwd: str | None = None,
                 on_stored: Callable[[], None] | None = None) -> int:
    """Store (forced) and deliver an ``ombacksync/error`` event; returns its id."""
    ensure_backsync(conn)
    message = message.replace("\x00", "")[:16384]  # perl's message, bounded to fit in a key
    result = send(conn, ERROR_TOPIC, {"FILE": script, "MESSAGE": message}, force=True, cwd=cwd, on_stored=on_stored,
                  environ={})
    assert result.event_id is not None
    return result.event_id

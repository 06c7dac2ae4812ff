"""Subscriber events as a durable queue: claim under a lease, then acknowledge.

A subscriber event is ``open`` until it is ``done``, ``failed`` (retries used up) or ``purged``.
Claiming one moves its ``next_attempt_at`` past now by a lease and counts the attempt *at claim
time*; so a claimer that dies (kill -9 at any instant) leaves a row that is simply due again when
the lease runs out, and its attempt still counts. Finishing is fenced by the attempt number: a
claimer whose lease was lost and re-claimed cannot overwrite the newer claim's outcome.
Nothing is deleted on read. Every attempt is recorded in ``attempts``.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from .actions import ActionResult, EventContext
from .errors import UsageError
from .store import now as wall_now
from .store import transaction

LEASE_MARGIN = 30.0  # seconds a claim outlives the subscriber's own timeout
RETRY_BASE = 1.0
RETRY_CAP = 300.0
STATUSES = ("open", "done", "failed", "purged")


class Claimed(NamedTuple):
    """One claimed subscriber event with what is needed to deliver it."""

    id: int
    attempt: int  # the attempt number this claim holds (the fencing token)
    event: EventContext
    subscriber_id: int
    action: str
    target: str
    timeout: float
    retries: int


_CLAIMED_SELECT = (
    "SELECT se.id, se.attempts, se.subscriber_id, e.id AS event_id, e.topic, e.key, e.depth, e.context, "
    "s.action, s.target, s.timeout, s.retries "
    "FROM subscriber_events se JOIN events e ON e.id = se.event_id JOIN subscribers s ON s.id = se.subscriber_id "
)


def _take(conn: sqlite3.Connection, rows: list[sqlite3.Row], at: float, owner: str | None) -> list[Claimed]:
    # Inside the caller's transaction: count the attempt now and hold the row for a lease.
    conn.executemany(
        "UPDATE subscriber_events SET attempts = attempts + 1, next_attempt_at = ?, updated_at = ?, claimed_by = ? "
        "WHERE id = ?",
        [(at + r["timeout"] + LEASE_MARGIN, at, owner, r["id"]) for r in rows],
    )
    claimed = []
    for r in rows:
        event = EventContext(r["event_id"], r["topic"], json.loads(r["key"]), r["key"], r["depth"],
                             json.loads(r["context"]) if r["context"] else {})
        claimed.append(Claimed(r["id"], r["attempts"] + 1, event, r["subscriber_id"], r["action"], r["target"],
                               r["timeout"], r["retries"]))
    return claimed


def claim(conn: sqlite3.Connection, *, limit: int = 1, at: float | None = None, action: str | None = None,
          exclude_action: str | None = None, owner: str | None = None) -> list[Claimed]:
    """Claim up to ``limit`` due open subscriber events, oldest due first, for ``owner``."""
    at = wall_now() if at is None else at
    kind, args = _of_action(action, exclude_action)
    with transaction(conn):
        rows = conn.execute(
            _CLAIMED_SELECT + f"WHERE se.status = 'open' AND se.next_attempt_at <= ?{kind} "
            "ORDER BY se.next_attempt_at, se.id LIMIT ?", (at, *args, limit)
        ).fetchall()
        return _take(conn, rows, at, owner)


def retry_delay(attempt: int) -> float:
    """Capped exponential backoff with jitter before the attempt after ``attempt``."""
    return min(RETRY_CAP, RETRY_BASE * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def finish(conn: sqlite3.Connection, done: Sequence[tuple[Claimed, ActionResult]]) -> list[str]:
    """Record attempts and their outcomes in one transaction; returns each new status.

    Success -> done. Failure -> open again after backoff, or failed once the subscriber's
    retries are used up (attempts > retries). A claim whose lease was taken over meanwhile
    (its attempt number is no longer current) only records its attempt ("stale").
    """
    statuses: list[str] = []
    at = wall_now()
    with transaction(conn):
        for c, result in done:
            conn.execute(
                "INSERT INTO attempts (subscriber_event_id, number, started_at, ended_at, ok, exit_status, output, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (c.id, c.attempt, result.started_at, result.ended_at, int(result.ok), result.exit_status,
                 result.output, result.error),
            )
            if result.ok:
                status, next_at = "done", at
            elif c.attempt > c.retries:
                status, next_at = "failed", at
            else:
                status, next_at = "open", at + retry_delay(c.attempt)
            cur = conn.execute(
                "UPDATE subscriber_events SET status = ?, next_attempt_at = ?, last_error = ?, updated_at = ? "
                "WHERE id = ? AND attempts = ? AND status = 'open'",
                (status, next_at, result.error, at, c.id, c.attempt),
            )
            statuses.append(status if cur.rowcount else "stale")
    return statuses


def _equal(pairs: list[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """``column = ?`` conditions and their arguments for the pairs whose value is not None."""
    given = [(column, value) for column, value in pairs if value is not None]
    return [f"{column} = ?" for column, _ in given], [value for _, value in given]


def release(conn: sqlite3.Connection, claims: Sequence[Claimed], at: float | None = None) -> None:
    """Give back claims that were never attempted (the attempt is not counted), due at ``at``."""
    at = wall_now() if at is None else at
    with transaction(conn):
        conn.executemany(
            "UPDATE subscriber_events SET attempts = attempts - 1, next_attempt_at = ?, claimed_by = NULL, "
            "updated_at = ? WHERE id = ? AND attempts = ? AND status = 'open'",
            [(at, at, c.id, c.attempt) for c in claims])


def reclaim_abandoned(conn: sqlite3.Connection, owner_prefix: str, keep: str) -> int:
    """Make due now the claims of owners named ``owner_prefix*`` other than ``keep``: the claims
    of a supervisor that died (only one runs per home). Their attempts stay counted."""
    at = wall_now()
    with transaction(conn):
        return conn.execute(
            "UPDATE subscriber_events SET next_attempt_at = ?, claimed_by = NULL, updated_at = ? "
            "WHERE status = 'open' AND next_attempt_at > ? AND claimed_by LIKE ? AND claimed_by != ?",
            (at, at, at, owner_prefix + "%", keep)).rowcount


def next_due(conn: sqlite3.Connection, action: str | None = None, exclude_action: str | None = None) -> float | None:
    """When the next open delivery (of ``action``, or not of ``exclude_action``) is due, if any."""
    kind, args = _of_action(action, exclude_action)
    return conn.execute("SELECT min(se.next_attempt_at) FROM subscriber_events se "
                        f"JOIN subscribers s ON s.id = se.subscriber_id WHERE se.status = 'open'{kind}",
                        args).fetchone()[0]


def _of_action(action: str | None, exclude_action: str | None) -> tuple[str, list[str]]:
    # Lanes split the work by action: the backsync lane takes "backsync", the others the rest.
    sql, args = "", []
    if action is not None:
        sql, args = sql + " AND s.action = ?", [*args, action]
    if exclude_action is not None:
        sql, args = sql + " AND s.action != ?", [*args, exclude_action]
    return sql, args


def retry_failed(conn: sqlite3.Connection, subscriber_id: int | None = None, event_id: int | None = None) -> int:
    """Put failed deliveries back to open, due now, with a fresh count; returns how many."""
    where, args = _equal([("status", "failed"), ("subscriber_id", subscriber_id), ("event_id", event_id)])
    at = wall_now()
    with transaction(conn):
        cur = conn.execute(
            f"UPDATE subscriber_events SET status = 'open', attempts = 0, next_attempt_at = ?, updated_at = ? "
            f"WHERE {' AND '.join(where)}", (at, at, *args))
        return cur.rowcount


def list_deliveries(conn: sqlite3.Connection, status: str | None = None, subscriber_id: int | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
    """Subscriber events, newest first, with the event's topic and key and the last error."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"bad status {status!r}: one of {', '.join(STATUSES)}")
    where, args = _equal([("se.status", status), ("se.subscriber_id", subscriber_id)])
    sql = ("SELECT se.id, se.event_id, e.topic, e.key, se.subscriber_id, s.description AS subscriber, "
           "se.status, se.attempts, se.next_attempt_at, se.last_error, se.created_at, se.updated_at "
           "FROM subscriber_events se JOIN events e ON e.id = se.event_id "
           "JOIN subscribers s ON s.id = se.subscriber_id "
           + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY se.id DESC LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*args, limit))]


def backlog(conn: sqlite3.Connection) -> dict[str, int]:
    """How many deliveries are open and failed."""
    counts = dict.fromkeys(("open", "failed"), 0)
    for status, count in conn.execute(
            "SELECT status, count(*) FROM subscriber_events WHERE status IN ('open', 'failed') GROUP BY status"):
        counts[status] = count
    return counts

"""Claims on subscriber events, kept apart from the queue row: the only writer of ``claims``.

A claim is a row of its own, ``claims (delivery_id, attempt, owner, lease_until)``, one per
delivery ever claimed: the queue row (:mod:`bridge.eventcore.deliveries`) is inserted when the
event is sent and updated once, with the outcome, instead of once more by each claim. On
PostgreSQL that claim update rewrote the row and an entry of every index it is in, since
``next_attempt_at`` and the claimer are indexed (docs/decisions.md, "The queue row written once").

- ``attempt`` is the number of the attempt the latest claim made: the fencing token. A claim
  counts its attempt here when it is made, so a claimer that dies (kill -9 at any instant) has
  still used one; the queue row's ``attempts`` catches up when an outcome is recorded.
- A claim *holds* while it is unsettled (``attempt`` above the row's ``attempts``: no outcome
  recorded yet) and its lease (``lease_until``: the subscriber's timeout and a margin) has not
  run out. A claim that no longer holds stays as a row: its ``attempt`` is the count the next
  claim goes on from, and a claimer working from an old snapshot finds its row changed.
- A claim is made, or made again, only if the row's ``attempt`` is still the one its claimer
  read (compare and set): on PostgreSQL two nodes that picked the same deliveries get one claim
  each, never both; on SQLite the write lock already makes read and claim one step.
- A claimed delivery is due (``next_attempt_at <= now``: it was claimed because it was), so every
  claim that holds is found by walking the due part of the open index, never the whole table.

Giving claims back (never attempted, a stream that failed, a dead node's) ends their leases; the
rows keep their places in the queue, since the claim never moved them.
"""

from __future__ import annotations

from ..model import DeliveryStatus, Lane
from ..store import Connection, transaction
from ..store import now as wall_now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_OPEN = DeliveryStatus.OPEN.value

# In a query over ``subscriber_events se LEFT JOIN claims c ON c.delivery_id = se.id``: the
# delivery is not claimed now (one ``?``: now). A delivery never claimed has no row.
FREE = "(c.delivery_id IS NULL OR c.attempt <= se.attempts OR c.lease_until <= ?)"
# ... and the opposite: a claim holds it (one ``?``: now).
HELD = "(c.attempt > se.attempts AND c.lease_until > ?)"
JOIN = "LEFT JOIN claims c ON c.delivery_id = se.id "
# What operators see of a delivery (``ledger``; with JOIN): the attempts counted, a claim's
# included; who holds it; when it is next due (while claimed: the end of the lease).
VIEW = (f"CASE WHEN c.attempt > se.attempts THEN c.attempt ELSE se.attempts END AS attempts, "
        f"CASE WHEN se.status = '{_OPEN}' AND c.attempt > se.attempts THEN c.owner END AS claimed_by, "
        f"CASE WHEN se.status = '{_OPEN}' AND c.attempt > se.attempts AND c.lease_until > se.next_attempt_at "
        "THEN c.lease_until ELSE se.next_attempt_at END AS next_attempt_at")


def take(conn: Connection, wanted: Sequence[tuple[int, int, float]], owner: str | None) -> set[int]:
    """Claim, inside the caller's transaction, each ``(delivery id, attempt, lease end)`` of
    ``wanted`` for ``owner``, where ``attempt`` is one past the count its claimer read; returns
    the ids claimed: those whose count is still that one (on SQLite, all of them)."""
    if not wanted:
        return set()
    rows = [(d, attempt, owner, lease) for d, attempt, lease in wanted]
    return conn.dialect.upsert_rows(
        conn, "claims", "delivery_id, attempt, owner, lease_until", ("bigint", "integer", "text", "float8"),
        "DO UPDATE SET attempt = excluded.attempt, owner = excluded.owner, lease_until = excluded.lease_until "
        "WHERE claims.attempt = excluded.attempt - 1", rows)


def release(conn: Connection, claims: Sequence[tuple[int, int]]) -> None:
    """Give back, inside the caller's transaction, claims ``(delivery id, attempt)`` that were never
    attempted: the attempt is not counted, and the delivery is free at once. A claim made again
    meanwhile is left alone, and so is one whose outcome is recorded already (counting it down
    would take the count below the row's, and no later claim could be made)."""
    conn.executemany("UPDATE claims SET attempt = attempt - 1, owner = NULL, lease_until = 0 WHERE delivery_id = ? "
                     "AND attempt = ? AND attempt > (SELECT se.attempts FROM subscriber_events se "
                     "WHERE se.id = claims.delivery_id)", claims)


def end_leases(conn: Connection, claims: Sequence[tuple[int, int]]) -> None:
    """End the leases of claims ``(delivery id, attempt)``, inside the caller's transaction: their
    deliveries are free at once, at their places in the queue, the attempts still counted (they
    may have run). A claim made again meanwhile is left alone."""
    conn.executemany("UPDATE claims SET owner = NULL, lease_until = 0 WHERE delivery_id = ? AND attempt = ?", claims)


# The unsettled claims of open deliveries: those that hold, and those whose lease ran out with
# nobody to take them yet. Walks the due part of the open index, lane by lane (see the module's
# docstring).
_UNSETTLED = (f"FROM subscriber_events se JOIN claims c ON c.delivery_id = se.id WHERE se.lane IN "
              f"({', '.join(repr(lane.value) for lane in Lane)}) AND se.status = '{_OPEN}' "
              "AND se.next_attempt_at <= ? AND c.attempt > se.attempts")


def reclaim_abandoned(conn: Connection, owner_prefix: str, keep: str) -> int:
    """Free at once the claims of owners named ``owner_prefix*`` other than ``keep``: the claims of
    a supervisor that died (only one runs per home), or of a dead node. Their attempts stay counted."""
    with transaction(conn):
        return end_owners(conn, owner_prefix, keep)


def end_owners(conn: Connection, owner_prefix: str, keep: str = "", *, ended_too: bool = False) -> int:
    """End the leases of the claims of owners named ``owner_prefix*`` other than ``keep``, inside
    the caller's transaction: the claims of a supervisor or node that died. With ``ended_too``,
    also those whose lease had already ended. The claims name no owner any more; a claim's attempt
    stays counted. Returns how many. (Not LIKE: a ``_`` in a name would be a wildcard.)"""
    at = wall_now(conn)
    # The owner (and lease) conditions are on the updated row too, not only in the subquery: on
    # PostgreSQL a claim made again meanwhile by a live node is re-checked against them, and kept.
    leased, args = ("", ()) if ended_too else ("lease_until > ? AND ", (at,))
    taken: int = conn.execute(
        f"UPDATE claims SET owner = NULL, lease_until = 0 WHERE {leased}substr(owner, 1, length(?)) = ? "
        f"AND owner != ? AND delivery_id IN (SELECT c.delivery_id {_UNSETTLED})",
        (*args, owner_prefix, owner_prefix, keep, at)).rowcount
    if taken:
        conn.dialect.announce(conn)
    return taken


def by_owner(conn: Connection, leased_at: float | None = None) -> dict[str, int]:
    """{owner: unsettled claims of open deliveries} (with ``leased_at``, only those whose lease runs
    past it: the claims that hold)."""
    lease = "" if leased_at is None else " AND c.lease_until > ?"
    at = wall_now(conn)
    return {owner: count for owner, count in conn.execute(
        f"SELECT c.owner, count(*) {_UNSETTLED}{lease} AND c.owner IS NOT NULL GROUP BY c.owner",
        (at, *(() if leased_at is None else (leased_at,))))}


def in_flight(conn: Connection, subscriber_id: int) -> int:
    """How many of a subscriber's deliveries a claim holds now."""
    at = wall_now(conn)
    return conn.execute(
        f"SELECT count(*) FROM subscriber_events se JOIN claims c ON c.delivery_id = se.id WHERE se.subscriber_id = ? "
        f"AND se.status = '{_OPEN}' AND {HELD}", (subscriber_id, at)).fetchone()[0]


def forget(conn: Connection, ids: Sequence[int]) -> None:
    """Delete the claims of deliveries ``ids``, inside the caller's transaction: those deliveries are
    deleted, or start a new round of attempts (their count starts again)."""
    for sql, args in conn.dialect.in_ids("DELETE FROM claims WHERE delivery_id IN ({ids})", (), list(ids)):
        conn.execute(sql, args)


def forget_subscriber(conn: Connection, subscriber_id: int) -> None:
    """Delete the claims of a subscriber's deliveries, inside the caller's transaction (it is removed)."""
    conn.execute("DELETE FROM claims WHERE delivery_id IN (SELECT id FROM subscriber_events WHERE subscriber_id = ?)",
                 (subscriber_id,))

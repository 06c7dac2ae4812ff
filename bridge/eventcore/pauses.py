"""Paused subscribers: the only writer of ``subscriber_pauses`` (a row while a subscriber is paused).

A paused subscriber keeps everything but the running: events that match it are stored and its
deliveries created (OMi and ``ombridge close`` get their usual answers), but no claim of any node
hands them out (:func:`bridge.eventcore.deliveries.claim` skips them), and a synchronized
subscriber's calls wait as ordinary open deliveries. Resuming deletes the row and wakes every
node's Event Manager (``NOTIFY`` on PostgreSQL; the caller rings the home's doorbell): what waited
runs then, oldest first, in the order it was sent. Deliveries already claimed when the pause is
committed finish (a Close in perl is not taken back); no new one starts on any node after it.

Not the same as disabling (docs/operations.md, "Pause or disable"): a disabled subscriber gets no
deliveries at all, and a disabled system subscriber makes the events it would take refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import NotFound
from ..model import ActionKind, DeliveryStatus, Lane
from ..store import Connection, now, transaction

_OPEN = DeliveryStatus.OPEN.value


class PauseChange(NamedTuple):
    """What a pause or a resume found and did."""

    subscriber_id: int
    action: str  # the subscriber's action (backsync, omi, command, ...)
    changed: bool  # False: it was paused (or running) already, nothing was written
    paused_at: float | None  # the pause in force after the call (None: running)
    paused_by: str | None
    open: int  # its open deliveries: held while paused, due once resumed
    in_flight: int  # of them, claimed before the pause: they finish


def pause(conn: Connection, subscriber_id: int, by: str) -> PauseChange:
    """Pause a subscriber (``by``: who, as :mod:`bridge.eventcore.audit` names them); a paused
    one stays as it was (``changed`` False). :class:`NotFound` for an unknown id."""
    return _switch(conn, subscriber_id, True, by)


def resume(conn: Connection, subscriber_id: int) -> PauseChange:
    """Resume a paused subscriber: its deliveries are claimed again, oldest first, on every node
    (woken at the commit); a running one stays as it was (``changed`` False)."""
    return _switch(conn, subscriber_id, False, "")


def _switch(conn: Connection, subscriber_id: int, paused: bool, by: str) -> PauseChange:
    # The one place the pause of a subscriber changes: running -> paused, paused -> running.
    from .claims import in_flight

    with transaction(conn, catalog=True):
        row = conn.execute("SELECT action FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
        if row is None:
            raise NotFound(f"no subscriber {subscriber_id}")
        current = conn.execute("SELECT paused_at, paused_by FROM subscriber_pauses WHERE subscriber_id = ?",
                               (subscriber_id,)).fetchone()
        changed = (current is None) == paused
        if changed and paused:
            current = (now(conn), by)
            conn.execute("INSERT INTO subscriber_pauses (subscriber_id, paused_at, paused_by) VALUES (?, ?, ?)",
                         (subscriber_id, *current))
        elif changed:
            current = None
            conn.execute("DELETE FROM subscriber_pauses WHERE subscriber_id = ?", (subscriber_id,))
            conn.dialect.announce(conn)  # every node's lanes look again at the commit
        open_count = conn.execute(f"SELECT count(*) FROM subscriber_events WHERE subscriber_id = ? "
                                  f"AND status = '{_OPEN}'", (subscriber_id,)).fetchone()[0]
        return PauseChange(subscriber_id, row[0], changed, current[0] if current else None,
                           current[1] if current else None, open_count, in_flight(conn, subscriber_id))


def forget(conn: Connection, subscriber_id: int) -> None:
    """Drop a subscriber's pause, inside the caller's transaction (the subscriber is removed)."""
    conn.execute("DELETE FROM subscriber_pauses WHERE subscriber_id = ?", (subscriber_id,))


def paused(conn: Connection) -> dict[int, tuple[float, str]]:
    """Each paused subscriber's (since when, by whom), by id."""
    return {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT subscriber_id, paused_at, paused_by FROM subscriber_pauses ORDER BY subscriber_id")}


def listing(conn: Connection) -> list[dict[str, Any]]:
    """The paused subscribers as ``status`` shows them: id, action, description, since when, by
    whom, and how many open deliveries they hold (``held``)."""
    rows = conn.execute(
        "SELECT p.subscriber_id, s.action, s.description, p.paused_at, p.paused_by FROM subscriber_pauses p "
        "JOIN subscribers s ON s.id = p.subscriber_id ORDER BY p.subscriber_id").fetchall()
    held = {r[0]: r[1] for r in conn.execute(
        f"SELECT subscriber_id, count(*) FROM subscriber_events WHERE status = '{_OPEN}' AND subscriber_id IN "
        "(SELECT subscriber_id FROM subscriber_pauses) GROUP BY subscriber_id")}
    return [{"id": r[0], "action": r[1], "description": r[2], "paused_at": r[3], "paused_by": r[4],
             "held": held.get(r[0], 0)} for r in rows]


def states(conn: Connection) -> list[tuple[int, str, float | None]]:
    """(id, action, paused since or None) of every subscriber (``/metrics``)."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT s.id, s.action, p.paused_at FROM subscribers s LEFT JOIN subscriber_pauses p "
        "ON p.subscriber_id = s.id ORDER BY s.id")]


# A paused subscriber's deliveries are handed out by no claim (:func:`held_back`, in each claim). While
# none is paused (nearly always) the claim's SQL is what it was: one read of the tiny
# subscriber_pauses table decides it, and the burst checks nothing per row. A lane whose every
# subscriber is paused (the backsync lane in a maintenance window, its whole backlog held) claims
# nothing without walking its index; only a partly paused action lane walks past the paused
# deliveries that are due (`NOT IN` the paused ids).
def held_back(conn: Connection, lane: Lane | None) -> tuple[str, list[int]] | None:
    """The claim's condition on paused subscribers, with its arguments: ``("", [])`` while none
    is paused; None when every subscriber of ``lane`` is (nothing of it may be claimed)."""
    ids = [r[0] for r in conn.execute("SELECT subscriber_id FROM subscriber_pauses")]
    if not ids:
        return "", []
    marks = ", ".join("?" * len(ids))
    if lane is not None:
        own = [ActionKind.BACKSYNC.value] if lane is Lane.BACKSYNC else [ActionKind.OMI.value] \
            if lane is Lane.OMI else [ActionKind.BACKSYNC.value, ActionKind.OMI.value]
        kinds = f"action {'NOT ' if lane is Lane.ACTIONS else ''}IN ({', '.join('?' * len(own))})"
        if conn.execute(f"SELECT 1 FROM subscribers WHERE {kinds} AND id NOT IN ({marks}) LIMIT 1",
                        (*own, *ids)).fetchone() is None:
            return None
    return f"se.subscriber_id NOT IN ({marks}) AND ", ids

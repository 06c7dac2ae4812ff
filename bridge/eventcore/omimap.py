"""Which OMi events stand behind each external id: the ``omi_events`` table.

OMi addresses a change to ``/event_change/<external id>``; ombridge addresses a change back to
OMi's gateway by **OMi's** event id. Several OMi events can carry the same source event ID (a
duplicate in OMi), so an external id maps to one or more OMi ids. One row per OMi event id:

- written in the transaction that stores a forwarded ``omi/event`` (:func:`remember`), so that
  the same OMi event sent again, to this node or another, is recognised (:func:`known`) and
  stored only once;
- read by the sync back (:func:`omi_ids`) and stamped when a close goes back to OMi, before it
  is sent (:func:`arm`; :func:`disarm` when OMi refused it), so that OMi's echo of that close is
  recognised (:func:`echoes`) even when it arrives before the gateway's answer.

The table outlives the events (retention prunes events, not this table): a ticket may be closed
months after its event was forwarded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..store import Connection, now, transaction

ECHO_WINDOW = 600.0  # seconds after a close went back to OMi in which OMi's close of it is its echo


def known(conn: Connection, omi_ids: Iterable[str]) -> dict[str, tuple[str, int | None]]:
    """{OMi id: (external id, event id)} of the OMi events already stored, among ``omi_ids``."""
    ids = list(dict.fromkeys(omi_ids))
    found: dict[str, tuple[str, int | None]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        rows = conn.execute(f"SELECT omi_id, external_id, event_id FROM omi_events WHERE omi_id IN "
                            f"({','.join('?' * len(chunk))})", chunk)
        found.update((r[0], (r[1], r[2])) for r in rows)
    return found


class Raced(Exception):
    """Another node stored one of these OMi events first (:func:`remember`)."""

    def __init__(self) -> None:
        super().__init__("another node stored the same OMi event at the same moment; OMi's retry finds it stored")


def remember(conn: Connection, rows: Iterable[tuple[str, str, int | None]]) -> None:
    """Record (OMi id, external id, event id) of forwarded events being stored, inside the
    caller's transaction (the one storing the events). Raises :class:`Raced` when an OMi id is
    already there: another node stored the same OMi event since it was looked up (on PostgreSQL
    this insert waits for that node's commit), so the caller rolls back and looks again."""
    at = now(conn)
    values = sorted({omi_id: (omi_id, external, event_id, at) for omi_id, external, event_id in rows}.values())
    for start in range(0, len(values), 200):  # (sorted: two nodes lock the same ids in one order)
        chunk = values[start:start + 200]
        inserted = conn.execute(
            "INSERT INTO omi_events (omi_id, external_id, event_id, received_at) VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * len(chunk)) + " ON CONFLICT DO NOTHING RETURNING omi_id",
            [v for row in chunk for v in row]).fetchall()
        if len(inserted) < len(chunk):
            raise Raced


def omi_ids(conn: Connection, external_id: str) -> list[str]:
    """Every OMi event id behind ``external_id``, oldest first ([] when none is known)."""
    return [r[0] for r in conn.execute("SELECT omi_id FROM omi_events WHERE external_id = ? ORDER BY received_at, "
                                       "omi_id", (external_id,))]


@dataclass(frozen=True)
class Guard:
    """The loop guard armed for one close going back to OMi (:func:`arm`): the stamp it wrote,
    and what each OMi event held before (absent: ombridge knew no row for it)."""

    external_id: str
    at: float
    before: dict[str, float | None]


def arm(conn: Connection, external_id: str, omi_ids_closing: Iterable[str]) -> Guard:
    """Note, **before** the close is sent, that ombridge closes these OMi events (the loop guard):
    OMi may forward its echo of the close before its gateway has answered ombridge, and that
    echo must already find the note. Committed when this returns."""
    ids = list(dict.fromkeys(omi_ids_closing))
    with transaction(conn):
        before = {r[0]: r[1] for r in conn.execute(
            f"SELECT omi_id, closed_back_at FROM omi_events WHERE omi_id IN ({','.join('?' * len(ids))})", ids)}
        # (a stamp of its own, never one it replaces: disarm takes back only what this arm wrote)
        at = max([now(conn), *(stamp + 1e-3 for stamp in before.values() if stamp is not None)])
        for omi_id in ids:
            conn.execute("INSERT INTO omi_events (omi_id, external_id, received_at, closed_back_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (omi_id) DO UPDATE SET closed_back_at = excluded.closed_back_at",
                         (omi_id, external_id, at, at))
    return Guard(external_id, at, before)


def disarm(conn: Connection, guard: Guard, omi_ids_not_closed: Iterable[str]) -> None:
    """Take back :func:`arm`'s note for the OMi events the close certainly did not reach (the
    gateway refused it, or it was never sent), unless a later close armed them again meanwhile:
    OMi's own close of them is then a close as always."""
    with transaction(conn):
        for omi_id in dict.fromkeys(omi_ids_not_closed):
            if omi_id in guard.before:
                conn.execute("UPDATE omi_events SET closed_back_at = ? WHERE omi_id = ? AND closed_back_at = ?",
                             (guard.before[omi_id], omi_id, guard.at))
            else:  # the row was made by arm (an OMI_ID given in the key, never forwarded)
                conn.execute("DELETE FROM omi_events WHERE omi_id = ? AND closed_back_at = ? AND event_id IS NULL",
                             (omi_id, guard.at))


def echoes(conn: Connection, external_ids: Iterable[str], at: float | None = None) -> set[str]:
    """The external ids, among ``external_ids``, whose OMi events ombridge itself closed within
    :data:`ECHO_WINDOW` seconds: a close OMi sends for them now is the echo of ombridge's own."""
    ids = list(dict.fromkeys(external_ids))
    if not ids:
        return set()
    since = (now(conn) if at is None else at) - ECHO_WINDOW
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(r[0] for r in conn.execute(
            f"SELECT external_id FROM omi_events WHERE external_id IN ({','.join('?' * len(chunk))}) "
            f"AND closed_back_at >= ?", (*chunk, since)))
    return found

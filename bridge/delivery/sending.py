"""Sending as a producer means it: store the events, then make their synchronized deliveries.

:mod:`bridge.eventcore.events` stores an event and hands back the synchronized deliveries it created
already claimed (``SendResult.pending``); running them is the delivery layer's work, here,
called by the sender in its own thread. Every sender goes through :func:`send` or
:func:`send_many` (``ombridge send``, ``close``, the HTTP listener, the supervisor's reports).
A synchronized call that fails stays open for the Event Manager, which retries it after backoff.

``ombridge send`` imports this module on every call: the actions are imported only when a
synchronized subscriber matched (see bench/bench_events.py for the start-up figure).
"""

from __future__ import annotations

import json

from ..eventcore import events
from ..eventcore.deliveries import Claimed, finish, release
from ..model import Settlement
from ..store import Connection

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ..eventcore.events import KeyInput, SendResult


def send(conn: Connection, topic: str, key: KeyInput, force: bool = False, *, cwd: str | None = None,
         **options: Any) -> SendResult:
    """Store one event (:func:`bridge.eventcore.events.send`) and call its synchronized subscribers before
    returning; ``cwd`` is where their commands and programs run."""
    return send_many(conn, [(topic, key)], force, cwd=cwd, **options)[0]


def send_many(conn: Connection, items: Iterable[tuple[str, KeyInput]], force: bool = False, *,
              cwd: str | None = None, **options: Any) -> list[SendResult]:
    """Store many events in one transaction (:func:`bridge.eventcore.events.send_many`), then call their
    synchronized subscribers, one after the other."""
    return deliver(conn, events.send_many(conn, items, force, **options), cwd)


def deliver(conn: Connection, results: list[SendResult], cwd: str | None = None) -> list[SendResult]:
    """Make the pending synchronized deliveries of ``results`` and record them; returns the
    results with ``synchronized`` filled in (``results`` themselves when none was pending)."""
    pending = [p for r in results for p in r.pending]
    if not pending:
        return results
    from .actions import perform

    claims = _claims(pending)
    settled = finish(conn, [(c, perform(c.action, c.target, c.event, c.timeout, cwd, c.headers)) for c in claims])
    by_event: dict[int, list[tuple[int, Settlement]]] = {}
    for c, status in zip(claims, settled):
        by_event.setdefault(c.event.id, []).append((c.subscriber_id, status))
    return [events.SendResult(r.event_id, r.deliveries, tuple(by_event.get(r.event_id or -1, ()))) for r in results]


def hand_over(conn: Connection, results: list[SendResult]) -> int:
    """Give the pending synchronized deliveries of ``results`` to the Event Manager instead
    (claims released, due now, no attempt counted): for a sender that must not wait for them,
    such as a supervisor that is stopping. Returns how many."""
    pending = [p for r in results for p in r.pending]
    if pending:
        release(conn, _claims(pending))
    return len(pending)


def _claims(pending: list[events.Pending]) -> list[Claimed]:
    from ..eventcore.deliveries import EventContext

    return [Claimed(p.delivery_id, 1, EventContext(p.event_id, p.topic, p.key, p.key_json, p.depth, p.context),
                    p.subscriber_id, p.action, p.target, p.timeout, p.retries,
                    json.loads(p.secret_headers) if p.secret_headers else None)
            for p in pending]


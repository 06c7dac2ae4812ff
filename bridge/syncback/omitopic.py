"""The built-in topic ``omi/change`` and its system subscriber, the sync back (:mod:`bridge.syncback.omisync`).

Any producer may send ``omi/change`` (``ombridge omi close``, the JSON API, a command subscriber, a
ticket system calling ombridge); the subscriber (action ``omi``, lane ACTIONS) delivers each event
to OMi's gateway, durable and retried like every delivery.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError
from ..eventcore import builtins
from ..eventcore.builtins import CHANGE_TOPIC
from ..store import Connection, Store


def ensure_subscriber(conn: Connection) -> int:
    """Create topic ``omi/change`` and the sync-back system subscriber if missing; returns its id."""
    return builtins.ensure(conn, builtins.OMI)


def close_key(external_id: str, annotation: str | None = None) -> dict[str, str]:
    """The ``omi/change`` key of a close of external id ``external_id`` (with an annotation)."""
    if not external_id:
        raise UsageError("an ID must not be empty")
    key = {"ID": external_id, "STATE": "closed"}
    if annotation:
        key["ANNOTATION"] = annotation
    return key


def send_close(where: Store, external_id: str, annotation: str | None = None,
               on_stored: Callable[[], None] | None = None) -> int:
    """Store ``omi/change`` for a close of ``external_id``; returns the event id. Refused at once
    (:class:`bridge.syncback.omisync.Unsendable`, nothing stored) when no OMi event is known behind it."""
    from ..delivery.sending import send
    from .omisync import targets

    key = close_key(external_id, annotation)
    conn = where.connect()
    try:
        targets(conn, key)
        ensure_subscriber(conn)
        result = send(conn, CHANGE_TOPIC, key, force=True, cwd=where.root, on_stored=on_stored)
    finally:
        conn.close()
    assert result.event_id is not None
    return result.event_id



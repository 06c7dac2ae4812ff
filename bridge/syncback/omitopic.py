"""The built-in topic ``omi/change`` and its system subscriber, the sync back (:mod:`bridge.syncback.omisync`).

Any producer may send ``omi/change`` (``ombridge omi close``, the JSON API, a command subscriber, a
ticket system calling ombridge); the subscriber (action ``omi``, lane ACTIONS) delivers each event
to OMi's gateway, durable and retried like every delivery.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import store
from ..errors import UsageError
from ..eventcore import catalog
from ..home import Home
from ..model import ActionKind
from ..store import Connection

CHANGE_TOPIC = "omi/change"
DESCRIPTION = "OMi sync back: omi/change -> POST event_change/<OMi id> to OMi's gateway"
TIMEOUT = 30.0
RETRIES = 300  # with the backoff capped at 5 minutes: about a day of an unreachable gateway
BUILTIN_TOPICS = [(CHANGE_TOPIC, ["ID"], "a change for OMi: ID is the external id (OMI_ID optional); STATE, SEVERITY, TITLE, "
                                  "ANNOTATION, ASSIGNED_USER, ASSIGNED_GROUP, CA_<NAME> go to OMi's gateway")]


def ensure_subscriber(conn: Connection) -> int:
    """Create topic ``omi/change`` and the sync-back system subscriber if missing; returns its id."""
    return catalog.ensure_system_subscriber(
        conn, ActionKind.OMI, description=DESCRIPTION, timeout=TIMEOUT, retries=RETRIES, topics=BUILTIN_TOPICS,
        pattern=(CHANGE_TOPIC, "every change for OMi"), filters=[])


def close_key(event_id: str, annotation: str | None = None) -> dict[str, str]:
    """The ``omi/change`` key of a close of external id ``event_id`` (with an annotation)."""
    if not event_id:
        raise UsageError("an ID must not be empty")
    key = {"ID": event_id, "STATE": "closed"}
    if annotation:
        key["ANNOTATION"] = annotation
    return key


def send_close(home: Home, event_id: str, annotation: str | None = None,
               on_stored: Callable[[], None] | None = None) -> int:
    """Store ``omi/change`` for a close of ``event_id``; returns the event id. Refused at once
    (:class:`bridge.syncback.omisync.Unsendable`, nothing stored) when no OMi event is known behind it."""
    from ..delivery.sending import send
    from .omisync import targets

    key = close_key(event_id, annotation)
    conn = store.connect(home)
    try:
        targets(conn, key)
        ensure_subscriber(conn)
        result = send(conn, CHANGE_TOPIC, key, force=True, cwd=str(home.root), on_stored=on_stored)
    finally:
        conn.close()
    assert result.event_id is not None
    return result.event_id



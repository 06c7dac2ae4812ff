"""Where the two halves meet: the backsync as a system subscriber of the event core.

Closed events are ``event/update`` events whose key has ``STATE`` = ``closed``; the built-in
subscriber (system indicator 1, action ``backsync``) is attached to that topic with that filter,
and the Event Manager delivers its subscriber events as ``OMBackSync('Close', &ID)`` calls in the
persistent perl child. A script that does not compile is reported as an ``ombacksync/error``
event (stored even when nobody listens), as the connector's ombacksync did.
"""

from __future__ import annotations

from ..errors import UsageError
from ..eventcore import builtins, catalog
from ..eventcore.builtins import ERROR_TOPIC, OMI_EVENT_TOPIC, UPDATE_TOPIC  # noqa: F401  (their home for senders)
from ..eventcore.events import (
    MAX_KEY_BYTES,
    SendResult,
    canonical_key,
    check_text,
    send,
)
from ..store import Connection
from . import sending

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

def ensure_backsync(conn: Connection) -> int:
    """Create the built-in topics and the backsync system subscriber if missing; returns its id."""
    return builtins.ensure(conn, builtins.BACKSYNC)


def close_timeout(conn: Connection) -> float:
    """How long one OMBackSync call may take: the backsync subscriber's timeout."""
    return catalog.get_subscriber(conn, ensure_backsync(conn)).timeout


def close_events(conn: Connection, ids: Iterable[str], *, cwd: str | None = None,
                 on_stored: Callable[[], None] | None = None) -> list[SendResult]:
    """Send ``event/update {"ID": id, "STATE": "closed"}`` for every ID, in one transaction
    (every ID is checked before anything is written; ``on_stored`` wakes the Event Manager)."""
    items = []
    for external_id in ids:
        if external_id == "":
            raise UsageError("an ID must not be empty")
        items.append((UPDATE_TOPIC, {"ID": external_id, "STATE": "closed"}))
    if not items:
        raise UsageError("no IDs to close")
    ensure_backsync(conn)
    # (a disabled backsync refuses them all: events.SystemSubscriberDisabled, nothing stored)
    return sending.send_many(conn, items, cwd=cwd, on_stored=on_stored)


def split_storable(ids: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the IDs that can be stored as closed events, [(ID, why not)] for the others).

    ``close`` sends the first and names each of the second: one ID that is not valid UTF-8
    must not keep the others from being closed.
    """
    good: list[str] = []
    refused: list[tuple[str, str]] = []
    for external_id in ids:
        if external_id == "":
            refused.append((external_id, "an ID must not be empty"))
            continue
        try:
            check_text("ID", external_id)  # what parse_key would check of this key, at a third of its cost
            if len(external_id) * 6 + 64 > MAX_KEY_BYTES:  # JSON escapes a character into 6 bytes at most
                canonical_key({"ID": external_id, "STATE": "closed"})  # the exact size, for a long ID only
        except UsageError as exc:
            refused.append((external_id, str(exc).replace("key field ID", "the ID").replace("the key", "the ID")))
            continue
        good.append(external_id)
    return good, refused


def store_error(conn: Connection, script: str, message: str, *,
                on_stored: Callable[[], None] | None = None) -> SendResult:
    """Store (forced) an ``ombacksync/error`` event; its synchronized deliveries are left
    ``pending`` for the caller (:func:`bridge.delivery.sending.deliver`), which may not want to wait."""
    ensure_backsync(conn)
    message = message.replace("\x00", "")[:16384]  # perl's message, bounded to fit in a key
    return send(conn, ERROR_TOPIC, {"FILE": script, "MESSAGE": message}, force=True, on_stored=on_stored, environ={})

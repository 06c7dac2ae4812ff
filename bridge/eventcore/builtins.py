"""The system subscribers and the topics they bring: one registry, seeded by whoever opens a
home's event core for work (``init``, the supervisor, the listener, the command line).

- the backsync (action ``backsync``): ``event/update`` with ``&STATE`` = ``closed`` ->
  ``OMBackSync('Close', &ID)`` in the persistent perl child (:mod:`bridge.delivery.backsync`);
  it brings ``ombacksync/error`` and ``omi/event`` too;
- the sync back to OMi (action ``omi``): every ``omi/change`` -> OMi's gateway
  (:mod:`bridge.syncback.omitopic`, :mod:`bridge.syncback.omisync`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import ActionKind
from ..store import Connection
from . import catalog

UPDATE_TOPIC = "event/update"
ERROR_TOPIC = "ombacksync/error"
OMI_EVENT_TOPIC = "omi/event"
CHANGE_TOPIC = "omi/change"


@dataclass(frozen=True)
class SystemSubscriber:
    """A built-in subscriber: what it runs, its settings as first made, its topics and filters."""

    action: ActionKind
    name: str  # what listings call it (its description is a sentence)
    description: str
    timeout: float
    retries: int
    topics: tuple[tuple[str, list[str], str], ...]  # (name, key fields, description) it brings
    pattern: tuple[str, str]  # the subscriber topic it is attached to (pattern, description)
    filters: tuple[tuple[str, str, str], ...] = ()  # (variable, regex, description)


BACKSYNC = SystemSubscriber(
    ActionKind.BACKSYNC, "ombacksync", "ombacksync: OMBackSync('Close', &ID) for closed events, in the persistent perl child",
    timeout=30.0,  # seconds one OMBackSync call may take (the perl host's per-call timeout)
    retries=10,
    topics=((UPDATE_TOPIC, ["ID", "STATE"], "an event changed; STATE closed means OMBackSync('Close', ID) is called"),
            (ERROR_TOPIC, ["FILE", "MESSAGE"], "ombacksync's script does not compile (ombacksync stopped, or a "
                                               "restart kept the old one) or Init failed"),
            (OMI_EVENT_TOPIC, ["ID"], "OMi forwarded an event (POST <base>/event); ID is the external id ombridge "
                                      "answered")),
    pattern=(UPDATE_TOPIC, "closed events"), filters=(("STATE", "closed", "only closed events"),))

OMI = SystemSubscriber(
    ActionKind.OMI, "OMi sync back", "OMi sync back: omi/change -> POST event_change/<OMi id> to OMi's gateway",
    timeout=30.0,
    retries=300,  # with the backoff capped at 5 minutes: about a day of an unreachable gateway
    topics=((CHANGE_TOPIC, ["ID"], "a change for OMi: ID is the external id (OMI_ID optional); STATE, SEVERITY, "
                                   "TITLE, ANNOTATION, ASSIGNED_USER, ASSIGNED_GROUP, CA_<NAME> go to OMi's gateway"),),
    pattern=(CHANGE_TOPIC, "every change for OMi"))

ALL = (BACKSYNC, OMI)
SEED_TOPICS = tuple(name for s in ALL for name, _, _ in s.topics)  # what a new event core holds
NAMES = {s.action.value: s.name for s in ALL}


def display_name(subscriber: dict) -> str:
    """What a listing calls a subscriber: a system subscriber by its name, another by its
    description, or what it runs when it has none. Takes a row with ``system``, ``action``,
    ``description`` and ``target`` (or the same prefixed ``subscriber_``, as the ledger joins them)."""
    def get(name: str) -> object:
        return subscriber.get(name, subscriber.get(f"subscriber_{name}"))

    if get("system") and get("action") in NAMES:
        return NAMES[str(get("action"))]
    return str(subscriber.get("description") or subscriber.get("subscriber") or get("target") or "")


def ensure(conn: Connection, which: SystemSubscriber) -> int:
    """Create ``which`` with its topics if missing; returns its id."""
    return catalog.ensure_system_subscriber(
        conn, which.action, description=which.description, timeout=which.timeout, retries=which.retries,
        topics=list(which.topics), pattern=which.pattern, filters=list(which.filters))


def ensure_all(conn: Connection) -> None:
    """Create every system subscriber (and its topics) that is missing."""
    for which in ALL:
        ensure(conn, which)

"""What the committer does before and after storing OMi's requests (in its one thread).

- ``omi/event``: an OMi event that was stored before (the same ``OMI_ID``, in this batch or an
  earlier one, by this node or another) is not stored again. Its key's ``ID`` becomes the
  external id answered the first time, and its result is the first event's, with no delivery:
  no subscriber runs twice. New ones are remembered in ``omi_events`` (:mod:`bridge.eventcore.omimap`) in
  the transaction that stores them.
- ``event/update`` with ``STATE`` ``closed``: when ombridge itself closed that external id's OMi
  events within :data:`bridge.eventcore.omimap.ECHO_WINDOW` (the sync back), OMi's close is the echo of
  ombridge's own; it is stored with ``STATE`` ``""`` and ``ECHO`` ``closed``, so it does not pass
  the backsync's filter and does not close the ticket a second time (the loop guard, docs/omi.md).

Each node's committer looks its OMi ids up before the transaction; a node that stored one of
them in between makes the mapping's insert find it (on PostgreSQL it waits for that node's
commit), which rolls the whole transaction back (:class:`bridge.eventcore.omimap.Raced`), and the batch is
looked up and stored again: once, whichever node OMi's retry reached.
"""

from __future__ import annotations

from typing import Any

from .. import store
from ..delivery.backsync import OMI_EVENT_TOPIC, UPDATE_TOPIC
from ..eventcore import events, omimap
from ..eventcore.events import SendResult

Items = list[tuple[str, Any]]
RACES = 3  # tries of a batch whose OMi events other nodes keep storing at the same moment


def store_all(conn: Any, items: Items, force: bool) -> list[SendResult]:
    """Store ``items`` in one transaction of this module's own, forwarded events once (their OMi
    mapping written in that transaction), echoed closes disarmed. The synchronized deliveries
    come back pending: the caller makes them once this returned (:func:`bridge.delivery.sending.deliver`)."""
    _disarm_echoes(conn, items)
    omi_ids = [str(key["OMI_ID"]) for topic, key in items if topic == OMI_EVENT_TOPIC and key.get("OMI_ID")]
    if not omi_ids:
        with store.transaction(conn):
            return events.store_many(conn, items, force, environ={})
    for _ in range(RACES - 1):
        try:
            return _store_once(conn, items, omi_ids, force)
        except omimap.Raced:  # another node stored one of them meanwhile: rolled back; now it is known
            pass
    return _store_once(conn, items, omi_ids, force)  # (raced again: the batch is refused, 503, OMi retries)


def _store_once(conn: Any, items: Items, omi_ids: list[str], force: bool) -> list[SendResult]:
    known = omimap.known(conn, omi_ids)
    first: dict[str, int] = {}  # OMi id -> index of the item that stores it in this batch
    fresh: Items = []
    plan: list[int | tuple[str, int | None]] = []  # per item: index in fresh, or (external id, event id) known
    for topic, key in items:
        omi_id = key.get("OMI_ID") if topic == OMI_EVENT_TOPIC else None
        omi_id = str(omi_id) if omi_id else None
        if omi_id in known:
            plan.append(known[omi_id])
        elif omi_id is not None and omi_id in first:
            plan.append(-1 - first[omi_id])  # stored by an earlier item of this batch
        else:
            if omi_id is not None:
                first[omi_id] = len(fresh)
            plan.append(len(fresh))
            fresh.append((topic, key))
    with store.transaction(conn):  # the events and their OMi mapping, all or none
        results = events.store_many(conn, fresh, force, environ={}) if fresh else []
        omimap.remember(conn, [(str(key["OMI_ID"]), str(key["ID"]), results[n].event_id)
                               for n, (topic, key) in enumerate(fresh)
                               if topic == OMI_EVENT_TOPIC and key.get("OMI_ID") and key.get("ID")
                               and results[n].event_id is not None])
    return [_result(step, key, fresh, results) for step, (_, key) in zip(plan, items)]


def _result(step: int | tuple[str, int | None], key: dict[str, Any], fresh: Items,
            results: list[SendResult]) -> SendResult:
    if isinstance(step, tuple):  # stored in an earlier request
        key["ID"] = step[0]
        return SendResult(step[1], 0)
    if step < 0:  # a repeat inside this batch
        index = -1 - step
        key["ID"] = fresh[index][1]["ID"]
        return SendResult(results[index].event_id, 0)
    return results[step]


def _disarm_echoes(conn: Any, items: Items) -> None:
    closes = [key for topic, key in items
              if topic == UPDATE_TOPIC and key.get("STATE") == "closed" and isinstance(key.get("ID"), str)]
    if not closes:
        return
    echoed = omimap.echoes(conn, [key["ID"] for key in closes])
    for key in closes:
        if key["ID"] in echoed:
            key["STATE"] = ""
            key["ECHO"] = "closed"

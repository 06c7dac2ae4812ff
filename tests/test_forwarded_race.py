"""Two nodes storing the same OMi event (issue 24): OMi's retry of a forwarded event may reach
another node while the first still stores it. The mapping goes in with the events, in one
transaction: whichever node comes second finds the OMi id taken, rolls back, looks again and
answers the first node's external id, storing nothing. Real connections to one real store; the
other node's transaction is held open by this test."""

from __future__ import annotations

import threading

import pytest

from bridge import store
from bridge.delivery import backsync
from bridge.delivery.backsync import OMI_EVENT_TOPIC
from bridge.eventcore import catalog, omimap
from bridge.home import Home
from bridge.model import ActionKind
from bridge.web import forwarded

pytestmark = pytest.mark.both_stores


def test_the_second_node_answers_the_first_ones_external_id_and_stores_nothing(home: Home, conn,
                                                                               monkeypatch) -> None:
    backsync.ensure_backsync(conn)  # the built-in topics, omi/event among them
    catalog.attach_topic(conn, catalog.add_subscriber(conn, ActionKind.COMMAND, "true"), OMI_EVENT_TOPIC)
    events_before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    looked_up = threading.Event()
    real_known = omimap.known

    def known(c, ids):  # a spy: the lookup happened (and found nothing) before the other node's commit
        found = real_known(c, ids)
        looked_up.set()
        return found

    monkeypatch.setattr(omimap, "known", known)
    other = store.connect(home)  # the first node: it stores omi-1 under external id EXT-FIRST
    txn = store.transaction(other)
    txn.__enter__()
    other.execute("INSERT INTO omi_events (omi_id, external_id, event_id, received_at) VALUES (?, ?, NULL, 0)",
                  ("omi-1", "EXT-FIRST"))
    key = {"ID": "EXT-SECOND", "OMI_ID": "omi-1"}
    answered: list = []
    second = threading.Thread(target=lambda: answered.append(forwarded.store_all(conn, [(OMI_EVENT_TOPIC, key)],
                                                                                 force=True)))
    second.start()
    try:
        assert looked_up.wait(30)
    finally:
        txn.__exit__(None, None, None)  # the first node commits
        other.close()
    second.join(30)
    assert not second.is_alive()
    (result,) = answered[0]
    assert key["ID"] == "EXT-FIRST" and result.deliveries == 0  # the first node's answer, no delivery
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == events_before  # stored nothing
    assert [tuple(r) for r in conn.execute("SELECT omi_id, external_id FROM omi_events")] == [("omi-1", "EXT-FIRST")]

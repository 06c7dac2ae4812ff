"""The event core's portable SQL (docs/decisions.md, "Every SQLite-specific construct"): what
changed spelling behaves as before, on the SQLite file and on PostgreSQL (``store_kind``)."""

from __future__ import annotations

from typing import Any

import pytest
from queue_support import DELIVERIES

from bridge import store
from bridge.eventcore import catalog, claims, deliveries, events, ledger, omimap
from bridge.model import ActionKind, Attempt, Lane

pytestmark = pytest.mark.both_stores


def test_search_of_keys_takes_its_text_literally(conn: Any) -> None:
    # (LIKE with the text escaped: % _ and \ are no wildcards, and case does not matter)
    catalog.add_topic(conn, "t/x", ["K"])
    for value in ("100% done", "a_b", "axb", "back\\slash", "ABC"):
        events.send(conn, "t/x", {"K": value}, force=True)
    found = {k: [events.json.loads(e["key"])["K"] for e in events.find_events(conn, text=k)]
             for k in ("0%", "_", "\\", "abc", "%")}
    assert found == {"0%": ["100% done"], "_": ["a_b"], "\\": ["back\\slash"], "abc": ["ABC"], "%": ["100% done"]}


def test_ids_come_back_from_inserts(conn: Any) -> None:
    first = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    second = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    assert second == first + 1
    catalog.add_topic(conn, "t/x", ["K"])
    st = catalog.attach_topic(conn, second, "t/x")
    assert conn.execute("SELECT subscriber_id FROM subscriber_topics WHERE id = ?", (st,)).fetchone()[0] == second


def test_subscriber_listing_joins_its_topics(conn: Any) -> None:
    catalog.add_topic(conn, "t/x", ["K"])
    catalog.add_topic(conn, "t/y", ["K"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    catalog.attach_topic(conn, sid, "t/x")
    catalog.attach_topic(conn, sid, "t/y", synchronized=True)
    lonely = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    listed = {r["id"]: r["topics"] for r in catalog.list_subscribers(conn)}
    assert listed[sid] == "t/x, t/y (sync)" and listed[lonely] is None


def test_event_counts_and_known_omi_ids(conn: Any) -> None:
    catalog.add_topic(conn, "t/x", ["K"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    catalog.attach_topic(conn, sid, "t/x")
    r = events.send(conn, "t/x", {"K": "1"})
    assert ledger.per_event(conn, [r.event_id]) == {r.event_id: {"deliveries": 1, "open": 1}}
    omimap.remember(conn, [("omi-1", "ext-1", r.event_id)])
    with pytest.raises(omimap.Raced), store.transaction(conn):  # a known OMi id keeps its first row,
        omimap.remember(conn, [("omi-2", "ext-2", None), ("omi-1", "ext-2", None)])  # and the caller is told
    assert omimap.omi_ids(conn, "ext-1") == ["omi-1"] and omimap.omi_ids(conn, "ext-2") == []


def test_the_loop_guard_is_armed_and_taken_back_row_by_row(conn: Any) -> None:
    omimap.remember(conn, [("omi-1", "ext-1", None), ("omi-2", "ext-1", None)])
    first = omimap.arm(conn, "ext-1", ["omi-1", "omi-2"])
    assert omimap.echoes(conn, ["ext-1", "ext-2"]) == {"ext-1"}
    omimap.disarm(conn, first, ["omi-2"])  # omi-2 refused: only omi-1's close stays armed
    assert [r[0] is not None for r in conn.execute("SELECT closed_back_at FROM omi_events ORDER BY omi_id")] \
        == [True, False]
    omimap.disarm(conn, first, ["omi-1"])
    assert omimap.echoes(conn, ["ext-1"]) == set()
    given = omimap.arm(conn, "ext-3", ["omi-9"])  # an OMI_ID OMi never forwarded: its row goes with the guard
    assert omimap.echoes(conn, ["ext-3"]) == {"ext-3"}
    omimap.disarm(conn, given, ["omi-9"])
    assert omimap.omi_ids(conn, "ext-3") == []
    second = omimap.arm(conn, "ext-1", ["omi-1"])
    third = omimap.arm(conn, "ext-1", ["omi-1"])  # armed again meanwhile: the older guard takes nothing back
    omimap.disarm(conn, second, ["omi-1"])
    assert omimap.echoes(conn, ["ext-1"]) == {"ext-1"} and third.at >= second.at


def test_reclaiming_a_prefix_does_not_treat_underscore_as_a_wildcard(conn: Any) -> None:
    catalog.add_topic(conn, "t/x", ["K"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    catalog.attach_topic(conn, sid, "t/x")
    for n in range(2):
        events.send(conn, "t/x", {"K": str(n)})
    deliveries.claim(conn, limit=1, lane=Lane.ACTIONS, owner="node_a/supervisor:1")
    deliveries.claim(conn, limit=1, lane=Lane.ACTIONS, owner="nodeXa/supervisor:2")
    assert claims.reclaim_abandoned(conn, "node_a/", keep="node_a/supervisor:9") == 1
    left = [r[0] for r in conn.execute(f"SELECT claimed_by FROM {DELIVERIES} WHERE claimed_by IS NOT NULL")]
    assert left == ["nodeXa/supervisor:2"]


def test_the_chart_counts_attempts_in_whole_buckets(conn: Any) -> None:
    # (a bucket is truncated on both: PostgreSQL's CAST would round 2.7 up)
    catalog.add_topic(conn, "t/x", ["K"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true", retries=0)
    catalog.attach_topic(conn, sid, "t/x")
    for n in range(3):
        events.send(conn, "t/x", {"K": str(n)})
    claims = deliveries.claim(conn, limit=3, lane=Lane.ACTIONS, owner="t")
    since = 1000.0
    outcomes = [Attempt(True, since + 1, since + 10.7 * 6), Attempt(True, since + 1, since + 10.2 * 6),
                Attempt(False, since + 1, since + 1.5 * 6, error="x")]
    deliveries.finish(conn, list(zip(claims, outcomes)))
    chart = ledger.activity(conn, since, since + 60 * 6, step=6)
    assert chart["succeeded"][10] == 2 and chart["failures"][1] == 1 and sum(chart["succeeded"]) == 2


@pytest.mark.parametrize("port_type", ["TEXT", "INTEGER"])
def test_a_context_row_matches_a_number_or_its_text_whatever_the_columns_type(conn: Any, port_type: str) -> None:
    # (SQLite compares 8080 and '8080' equal through the column's affinity; PostgreSQL refuses
    # text = integer, so the key's value goes as text there and takes the column's type)
    from bridge.eventcore.contexts import add_context

    conn.execute(f'CREATE TABLE cmdb ("NODE" TEXT, "PORT" {port_type}, "OWNER" TEXT)')
    conn.execute("INSERT INTO cmdb VALUES ('web1', 8080, 'carol')")
    catalog.add_topic(conn, "t/x", ["HOST", "P"])
    catalog.attach_topic(conn, catalog.add_subscriber(conn, ActionKind.COMMAND, "true"), "t/x")
    add_context(conn, "t/x", "cmdb", {"HOST": "NODE", "P": "PORT"})
    for port in (8080, "8080"):
        event_id = events.send(conn, "t/x", {"HOST": "web1", "P": port}).event_id
        context = conn.execute("SELECT context FROM events WHERE id = ?", (event_id,)).fetchone()[0]
        assert events.json.loads(context)["OWNER"] == "carol", (port, context)

"""OMi both ways, end to end: the real supervisor and listener, the example-like recorder script,
and a stand-in OMi gateway (tests/omi_gateway.py) that checks Basic credentials and records what
ombridge sent back."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import pytest
from conftest import wait_for
from omi_gateway import GW_PASSWORD, SYNC, Gateway, configure
from web_support import NS, XML, change_path, install, omb, recorded

from bridge import store
from bridge.home import Home

E = f"{{{NS}}}"


def event_xml(omi_id: str, seq: int | None = None, original_id: str | None = None, obj: str | None = None,
              attributes: dict[str, str] | None = None, title: str = "Disk full") -> str:
    parts = [f"<id>{omi_id}</id>", f"<title>{title}</title>"]
    if seq is not None:
        parts.append(f"<sequence_number>{seq}</sequence_number>")
    if original_id:
        parts.append(f"<original_id>{original_id}</original_id>")
    if obj:
        parts.append(f"<object>{obj}</object>")
    if attributes:
        parts.append("<custom_attribute_list>" + "".join(
            f"<custom_attribute><name>{k}</name><value>{v}</value></custom_attribute>" for k, v in attributes.items())
            + "</custom_attribute_list>")
    return "<event>" + "".join(parts) + "</event>"


def event_list(*events: str) -> bytes:
    return f'<event_list xmlns="{NS}">{"".join(events)}</event_list>'.encode()


def answered(body: bytes) -> list[tuple[str | None, str | None]]:
    root = ET.fromstring(body)
    return [(e.findtext(f"{E}id"), e.findtext(f"{E}sequence_number")) for e in root]


def rows(home: Home, sql: str, *args: object) -> list[tuple]:
    conn = store.connect(home)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def keys_of(home: Home, topic: str) -> list[dict]:
    return [json.loads(r[0]) for r in rows(home, "SELECT key FROM events WHERE topic = ? ORDER BY id", topic)]


def attempts_of(home: Home, topic: str) -> list[tuple]:
    return rows(home, "SELECT a.ok, a.exit_status, a.error, a.output FROM attempts a JOIN subscriber_events se "
                      "ON se.id = a.subscriber_event_id JOIN events e ON e.id = se.event_id WHERE e.topic = ? "
                      "ORDER BY a.id", topic)


@pytest.fixture
def gateway():
    gw = Gateway()
    yield gw
    gw.stop()


CANDIDATES = '["custom_attribute:SourceEventID", "original_id", "object", "id"]'


def test_external_id_from_each_candidate_and_the_close_reaches_the_script(home: Home, listening,
                                                                           gateway: Gateway) -> None:
    configure(home.root, gateway.url, CANDIDATES)
    install(home, "recorder")
    srv = listening()
    body = event_list(event_xml("omi-1", 7, original_id="orig-1", attributes={"SourceEventID": "INC 100"}),
                      event_xml("omi-2", 8, original_id="orig-2", obj="obj-2"),
                      event_xml("omi-3", 9, obj="obj-3"),
                      event_xml("omi-4", 10))
    with srv.client() as http:
        r = http.post("/omi/event", content=body, headers=XML)
        assert r.status_code == 200, r.text
        assert answered(r.content) == [("INC 100", "7"), ("orig-2", "8"), ("obj-3", "9"), ("omi-4", "10")]
        single = f'<event xmlns="{NS}">{event_xml("omi-5", original_id="orig-5")[7:]}'.encode()
        r = http.post("/omi/event", content=single, headers=XML)
        assert answered(b"<x>" + r.content.split(b"?>", 1)[1] + b"</x>") == [("orig-5", None)]
        keys = keys_of(home, "omi/event")
        assert [(k["ID"], k["OMI_ID"]) for k in keys] == [("INC 100", "omi-1"), ("orig-2", "omi-2"), ("obj-3", "omi-3"),
                                                          ("omi-4", "omi-4"), ("orig-5", "omi-5")]
        assert keys[0]["CA_SOURCEEVENTID"] == "INC 100"
        # OMi sends the close to /event_change/<external id>: the script gets the source event ID
        assert http.post(change_path("INC 100"), content=_close(), headers=XML).status_code == 200
    wait_for(lambda: recorded(home) == ["INC 100"], what="the close with the source event ID")


def _close() -> bytes:
    return (f'<event_change xmlns="{NS}"><event_ref><target_id>x</target_id></event_ref><changed_properties>'
            "<state_change><property_name>state</property_name><current_value>closed</current_value></state_change>"
            "</changed_properties></event_change>").encode()


def test_a_resent_event_list_is_stored_once_and_runs_no_subscriber_twice(home: Home, listening) -> None:
    seen = home.tmp / "seen.txt"
    sid = omb(home, "subscriber", "add", "--command", f"echo &ID >> {seen}").stdout.split()[-1]
    omb(home, "subscriber", "topic", "add", sid, "omi/event")
    srv = listening()
    first = event_list(event_xml("omi-a", 1, original_id="A"), event_xml("omi-b", 2, original_id="B"),
                       event_xml("omi-a", 3, original_id="A"))  # the same OMi event twice in one list
    again = event_list(event_xml("omi-b", 5, original_id="B-changed", attributes={"x": "y"}),
                       event_xml("omi-a", 6, original_id="A"), event_xml("omi-c", 7, original_id="C"))
    with srv.client() as http:
        r1 = http.post("/omi/event", content=first, headers=XML)
        r2 = http.post("/omi/event", content=again, headers=XML)
        r3 = http.post("/omi/event", content=again, headers=XML)
    assert answered(r1.content) == [("A", "1"), ("B", "2"), ("A", "3")]
    # the same OMi id is answered with the same external id, whatever the re-send carries now
    assert answered(r2.content) == answered(r3.content) == [("B", "5"), ("A", "6"), ("C", "7")]
    assert [k["OMI_ID"] for k in keys_of(home, "omi/event")] == ["omi-a", "omi-b", "omi-c"]
    wait_for(lambda: seen.exists() and len(seen.read_text().split()) == 3, what="three deliveries")
    assert sorted(seen.read_text().split()) == ["A", "B", "C"]


def test_custom_attribute_changes_keep_their_names(home: Home, listening) -> None:
    srv = listening()
    body = (f'<event_change xmlns="{NS}"><event_ref><target_id>x</target_id></event_ref><changed_properties>'
            "<custom_attribute_property_change><property_name>custom_attribute</property_name><name>Customer</name>"
            "<current_value>Globex</current_value></custom_attribute_property_change>"
            "<custom_attribute_property_change><property_name>custom_attribute</property_name>"
            "<current_value><name>Region</name><value>EMEA</value></current_value></custom_attribute_property_change>"
            "<string_property_change><property_name>title</property_name><current_value>T</current_value>"
            "</string_property_change></changed_properties></event_change>").encode()
    with srv.client() as http:
        assert http.post(change_path("E-1"), content=body, headers=XML).status_code == 200
        # the JSON API reaches the same committer: keys it would refuse stay 4xx, never a 503
        r = http.post("/api/v1/events", json={"topic": "event/update", "key": {"STATE": "closed"}})
        assert r.status_code == 422, r.text
        r = http.post("/api/v1/events", json={"topic": "omi/event", "key": {"ID": "no-omi-id"}, "force": True})
        assert r.status_code == 201, r.text
    assert [k["ID"] for k in keys_of(home, "omi/event")] == ["no-omi-id"]
    (key,) = keys_of(home, "event/update")
    assert key == {"ID": "E-1", "STATE": "", "CA_CUSTOMER": "Globex", "CA_REGION": "EMEA", "TITLE": "T",
                   "CHANGED": "CA_CUSTOMER,CA_REGION,title"}


def _received(gateway: Gateway, n: int = 1) -> list[dict]:
    wait_for(lambda: len([p for p in gateway.posts() if p["authorised"]]) >= n, what=f"{n} change(s) at the gateway")
    return [p for p in gateway.posts() if p["authorised"]]


def _change(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    found = {"target_id": root.findtext(f"{E}event_ref/{E}target_id")}
    for change in root.find(f"{E}changed_properties"):
        found[change.findtext(f"{E}property_name")] = change.findtext(f"{E}current_value")
        if change.find(f"{E}change_operation") is not None:
            found["operation"] = change.findtext(f"{E}change_operation")
    return found


def test_omi_close_and_the_json_api_reach_the_gateway(home: Home, listening, gateway: Gateway) -> None:
    gateway.start()
    configure(home.root, gateway.url)
    omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
    assert oct((home.root / "conf" / "omi-password").stat().st_mode & 0o777) == "0o600"
    r = omb(home, "omi", "test")
    assert r.stdout.count("\n") == 1 and "HTTP 200" in r.stdout and GW_PASSWORD not in r.stdout
    srv = listening()
    with srv.client() as http:  # two OMi events carry the same source id: both get the close
        r = http.post("/omi/event", content=event_list(event_xml("omi-1", 1, original_id="INC-7"),
                                                       event_xml("omi-2", 2, original_id="INC-7")), headers=XML)
        assert answered(r.content) == [("INC-7", "1"), ("INC-7", "2")]
    omb(home, "omi", "close", "INC-7", "--annotation", 'fixed <b>&amp; "done"</b>')
    got = _received(gateway, 2)
    assert sorted(p["path"] for p in got) == [SYNC + "event_change/omi-1", SYNC + "event_change/omi-2"]
    assert all(p["type"].startswith("application/xml") for p in got)
    change = _change(got[0]["body"])
    assert change["state"] == "closed" and change["annotation"] == 'fixed <b>&amp; "done"</b>'
    assert change["operation"] == "insert" and change["target_id"] in ("omi-1", "omi-2")
    # the JSON API, with OMi's id given, an id that needs escaping in the path
    with srv.client() as http:
        r = http.post("/api/v1/events", json={"topic": "omi/change", "key": {"ID": "X", "OMI_ID": "a/b c",
                                                                            "SEVERITY": "minor"}})
        assert r.status_code == 201, r.text
    got = _received(gateway, 3)
    assert got[2]["path"] == SYNC + "event_change/a%2Fb%20c"
    assert _change(got[2]["body"]) == {"target_id": "a/b c", "severity": "minor"}
    logs = "".join(p.read_text(errors="replace") for p in (home.root / "log").rglob("*") if p.is_file())
    assert GW_PASSWORD not in logs


def test_the_gateway_down_then_up_loses_nothing(home: Home, listening, gateway: Gateway) -> None:
    configure(home.root, gateway.url)
    omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
    srv = listening()
    with srv.client() as http:
        http.post("/omi/event", content=event_list(event_xml("omi-10", 1, original_id="INC-10")), headers=XML)
        omb(home, "omi", "close", "INC-10")
        http.post("/api/v1/events", json={"topic": "omi/change", "key": {"ID": "INC-11", "OMI_ID": "omi-11",
                                                                         "STATE": "closed"}})
    wait_for(lambda: len([a for a in attempts_of(home, "omi/change") if a[2] and "cannot be reached" in a[2]]) >= 2,
             what="attempts against the gateway that is down")
    omb(home, "stop")  # nothing is lost across a restart either
    gateway.start()
    listening()
    got = _received(gateway, 2)
    assert sorted(p["path"] for p in got) == [SYNC + "event_change/omi-10", SYNC + "event_change/omi-11"]
    wait_for(lambda: rows(home, "SELECT se.status FROM subscriber_events se JOIN events e ON e.id = se.event_id "
                                "WHERE e.topic = 'omi/change'") == [("done",), ("done",)], what="the deliveries done")


def test_a_401_from_the_gateway_is_shown_in_the_attempt(home: Home, listening, gateway: Gateway) -> None:
    gateway.start()
    configure(home.root, gateway.url)
    omb(home, "omi", "password", stdin="wrong-password\nwrong-password\n")
    r = omb(home, "omi", "test", check=False)
    assert r.returncode != 0 and "401" in r.stderr and "Traceback" not in r.stderr
    srv = listening()
    with srv.client() as http:
        http.post("/api/v1/events", json={"topic": "omi/change", "key": {"ID": "I", "OMI_ID": "o", "STATE": "closed"}})
    wait_for(lambda: attempts_of(home, "omi/change"), what="an attempt")
    ok, status, error, output = attempts_of(home, "omi/change")[0]
    assert not ok and status == 401 and "HTTP 401" in error and "gateway says 401" in error
    assert "wrong-password" not in error + output
    # no retry can mend a refusal: the delivery fails at once, after one attempt
    wait_for(lambda: "failed" in omb(home, "deliveries", "list", "--status", "failed").stdout, what="failed")
    assert len(attempts_of(home, "omi/change")) == 1


def test_loop_guard_omis_echo_of_our_close_does_not_close_the_ticket_again(home: Home, listening,
                                                                            gateway: Gateway) -> None:
    gateway.start()
    configure(home.root, gateway.url)
    omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
    install(home, "recorder")
    srv = listening()
    with srv.client() as http:
        http.post("/omi/event", content=event_list(event_xml("omi-1", 1, original_id="INC-1"),
                                                   event_xml("omi-2", 2, original_id="INC-2")), headers=XML)
        omb(home, "omi", "close", "INC-1")
        _received(gateway)
        wait_for(lambda: rows(home, "SELECT closed_back_at FROM omi_events WHERE omi_id = 'omi-1'")[0][0],
                 what="the close noted")
        # OMi now forwards the close ombridge caused, and a close of another event
        assert http.post(change_path("INC-1"), content=_close(), headers=XML).status_code == 200
        assert http.post(change_path("INC-2"), content=_close(), headers=XML).status_code == 200
    wait_for(lambda: recorded(home) == ["INC-2"], what="only the other close reaching the script")
    echo = [k for k in keys_of(home, "event/update") if k["ID"] == "INC-1"]
    assert echo == [{"ID": "INC-1", "STATE": "", "CHANGED": "state", "ECHO": "closed"}]

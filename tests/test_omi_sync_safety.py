"""The sync back to OMi where it could go wrong: OMi's echo of our close racing the gateway's
answer (the loop guard), ids that cannot be put into a URL, external ids OMi never forwarded.
The real supervisor and listener, the recorder script, and the stand-in gateway
(tests/omi_gateway.py)."""

from __future__ import annotations

import json

import pytest
from conftest import wait_for
from omi_gateway import GW_PASSWORD, SYNC, Gateway, configure
from test_omi_sync import _close, attempts_of, event_list, event_xml, keys_of, rows
from web_support import XML, change_path, install, omb, recorded

from bridge.home import Home


@pytest.fixture
def gateway():
    gw = Gateway().start()
    yield gw
    gw.stop()


@pytest.fixture
def synced(home: Home, listening, gateway: Gateway):
    """A listening supervisor whose sync back reaches the stand-in gateway, the recorder as the
    script, and OMi's events omi-1 (external id INC-1) and omi-2 (INC-2) forwarded."""
    configure(home.root, gateway.url)
    omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
    install(home, "recorder")
    srv = listening()
    with srv.client() as http:
        r = http.post("/omi/event", content=event_list(event_xml("omi-1", 1, original_id="INC-1"),
                                                       event_xml("omi-2", 2, original_id="INC-2")), headers=XML)
        assert r.status_code == 200, r.text
    return srv


def _deliveries(home: Home, topic: str) -> list[tuple]:
    return rows(home, "SELECT se.status FROM subscriber_events se JOIN events e ON e.id = se.event_id "
                      "WHERE e.topic = ? ORDER BY se.id", topic)


def test_the_loop_guard_holds_when_omis_echo_arrives_before_the_gateways_answer(home: Home, synced,
                                                                               gateway: Gateway) -> None:
    echoed: list[int] = []

    def echo_first(request: dict) -> None:  # OMi closes the event and forwards the close at once,
        if request["method"] == "POST" and request["path"] == SYNC + "event_change/omi-1":  # then answers
            with synced.client() as http:
                echoed.append(http.post(change_path("INC-1"), content=_close(), headers=XML).status_code)

    gateway.before_answer = echo_first
    omb(home, "omi", "close", "INC-1")
    wait_for(lambda: _deliveries(home, "omi/change") == [("done",)], what="the close accepted by the gateway")
    assert echoed == [200]
    with synced.client() as http:  # a close of another event, after the echo: a close as always
        assert http.post(change_path("INC-2"), content=_close(), headers=XML).status_code == 200
    wait_for(lambda: recorded(home) == ["INC-2"], what="only the other close reaching the script")
    assert [k for k in keys_of(home, "event/update") if k["ID"] == "INC-1"] == [
        {"ID": "INC-1", "STATE": "", "CHANGED": "state", "ECHO": "closed"}]


def test_a_close_the_gateway_refused_leaves_no_guard_behind(home: Home, synced, gateway: Gateway) -> None:
    gateway.status = 403  # OMi refuses the change: its event stays open, no echo will come
    omb(home, "omi", "close", "INC-1")
    wait_for(lambda: _deliveries(home, "omi/change") == [("failed",)], what="the refused close failed")
    assert rows(home, "SELECT closed_back_at FROM omi_events WHERE omi_id = 'omi-1'") == [(None,)]
    (delivery,) = rows(home, "SELECT se.id FROM subscriber_events se JOIN events e ON e.id = se.event_id "
                             "WHERE e.topic = 'omi/change'")
    with synced.client() as http:  # the console names the gateway's answer an HTTP status, not an exit status
        page = http.get(f"/ui/deliveries/{delivery[0]}").text
        assert "<dt>HTTP status</dt><dd>403</dd>" in page and "exit status" not in page
    shown = omb(home, "deliveries", "show", str(delivery[0])).stdout  # and so does the CLI
    assert ", HTTP 403, failed: " in shown and "exit status" not in shown
    with synced.client() as http:  # so OMi's own close later is a close as always
        assert http.post(change_path("INC-1"), content=_close(), headers=XML).status_code == 200
    wait_for(lambda: recorded(home) == ["INC-1"], what="OMi's close reaching the script")


def test_omi_ids_that_would_address_another_url_are_refused_the_rest_is_encoded(home: Home, synced,
                                                                                gateway: Gateway) -> None:
    odd = ["a/b", "x?y=1", "frag#1", "100%", "with space", "../up", ".hidden"]
    with synced.client() as http:
        for omi_id in ["..", "."]:
            r = http.post("/api/v1/events", json={"topic": "omi/change", "key": {"ID": "E", "OMI_ID": omi_id,
                                                                                "STATE": "closed"}})
            assert r.status_code == 422 and "nothing was sent" in r.json()["error"], r.text
            assert repr(omi_id) in r.json()["error"]
        for n, omi_id in enumerate(odd):
            r = http.post("/api/v1/events", json={"topic": "omi/change", "key": {"ID": f"E{n}", "OMI_ID": omi_id,
                                                                                "SEVERITY": "minor"}})
            assert r.status_code == 201, r.text
    wait_for(lambda: len(gateway.posts()) == len(odd), what="the changes at the gateway")
    assert sorted(p["path"].removeprefix(SYNC + "event_change/") for p in gateway.posts()) == sorted(
        ["a%2Fb", "x%3Fy%3D1", "frag%231", "100%25", "with%20space", "..%2Fup", ".hidden"])
    # a sender that does not ask first (any producer of omi/change): failed at once, nothing sent
    omb(home, "send", "omi/change", json.dumps({"ID": "E", "OMI_ID": "..", "STATE": "closed"}))
    wait_for(lambda: ("failed",) in _deliveries(home, "omi/change"), what="the unsendable change failed")
    (refused,) = [a for a in attempts_of(home, "omi/change") if not a[0]]
    assert "OMi's event id cannot be the id '..'" in refused[2] and refused[1] is None
    assert len(gateway.posts()) == len(odd)


def test_a_close_of_an_id_omi_never_forwarded_is_refused_at_once(home: Home, synced, gateway: Gateway) -> None:
    r = omb(home, "omi", "close", "INC-404", check=False)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert "no OMi event is known behind the external id 'INC-404'" in r.stderr and r.stderr.count("\n") == 1
    assert keys_of(home, "omi/change") == []  # nothing stored
    with synced.client() as http:
        r = http.post("/api/v1/events", json={"topic": "omi/change", "key": {"ID": "INC-404", "STATE": "closed"}})
        assert r.status_code == 422 and "OMi never forwarded" in r.json()["error"], r.text
        assert keys_of(home, "omi/change") == []
    # a delivery for it (from a producer that did not ask first) fails at once with the reason
    omb(home, "send", "omi/change", json.dumps({"ID": "INC-404", "STATE": "closed"}))
    wait_for(lambda: _deliveries(home, "omi/change") == [("failed",)], what="the delivery failed at once")
    ((ok, status, error, _),) = attempts_of(home, "omi/change")
    assert not ok and "no OMi event is known behind the external id 'INC-404'" in error
    assert gateway.posts() == []
    # a known one still goes
    assert "goes to OMi" in omb(home, "omi", "close", "INC-2").stdout
    wait_for(lambda: [p["path"] for p in gateway.posts()] == [SYNC + "event_change/omi-2"], what="the close sent")

"""The HTTP listener end to end: a real supervisor listening on 127.0.0.1 (a free port), driven by a
real HTTP client (httpx), plain and TLS, with a fixture script recording the exact IDs it closes."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import httpx
import pytest
from conftest import alive, status, wait_for
from web_support import (
    NS,
    PASSWORD,
    USER,
    XML,
    change_body,
    change_path,
    event_count,
    install,
    make_cert,
    omb,
    recorded,
)

from bridge import store
from bridge.home import Home

ODD_IDS = ["EVT 1", "a/b/c", "ü€ 😀", "100% sure", "semi;colon?&=+#", "quote'\"`$(x)", " lead and trail ",
           "line1\nline2\r\n", "back\\slash", "%2F-literal"]


def events_of(home: Home, topic: str) -> list[dict]:
    conn = store.connect(home)
    try:
        return [json.loads(r[0]) for r in conn.execute("SELECT key FROM events WHERE topic = ? ORDER BY id", (topic,))]
    finally:
        conn.close()


# -- OMi's requests ---------------------------------------------------------------------------------


def test_a_close_reaches_the_script_with_the_exact_id(home: Home, listening) -> None:
    install(home, "recorder")
    srv = listening()
    assert srv.status["listener"]["state"] == "listening" and not srv.status["listener"]["tls"]
    with srv.client() as http:
        for event_id in ODD_IDS:
            r = http.post(change_path(event_id), content=change_body("closed"), headers=XML)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/xml")
            assert f'xmlns="{NS}"' in r.text and "<event_ref><target_id>" in r.text
    wait_for(lambda: sorted(recorded(home)) == sorted(ODD_IDS), what="every ID closed exactly")


def test_string_property_form_of_a_close_and_other_changes(home: Home, listening) -> None:
    install(home, "recorder")
    srv = listening()
    with srv.client() as http:
        # a close in the string_property_change form, with a title change beside it
        body = change_body(None, state="closed", title="Disk full")
        assert http.post(change_path("S-1"), content=body, headers=XML).status_code == 200
        # changes without a close: stored, never closed
        title = change_body(None, title="New title")
        assert http.post(change_path("T-1"), content=title, headers=XML).status_code == 200
        assert http.post(change_path("T-2"), content=change_body("resolved"), headers=XML).status_code == 200
        assert http.post(change_path("T-3"), content=change_body(None, severity="critical"),
                         headers={"Content-Type": "text/xml; charset=utf-8"}).status_code == 200
    wait_for(lambda: recorded(home) == ["S-1"], what="the close")
    # the other changes are stored (forced) with no delivery at all: nothing can close them later
    listed = json.loads(omb(home, "events", "list", "--topic", "event/update", "--json").stdout)
    assert {e["key"]["ID"]: e["deliveries"] for e in listed} == {"S-1": 1, "T-1": 0, "T-2": 0, "T-3": 0}
    assert recorded(home) == ["S-1"]
    keys = {k["ID"]: k for k in events_of(home, "event/update")}
    assert keys["S-1"] == {"ID": "S-1", "STATE": "closed", "TITLE": "Disk full", "CHANGED": "state,title"}
    assert keys["T-1"] == {"ID": "T-1", "STATE": "", "TITLE": "New title", "CHANGED": "title"}
    assert keys["T-2"]["STATE"] == "resolved" and keys["T-3"]["SEVERITY"] == "critical"


def test_forwarded_events_single_and_bulk(home: Home, listening) -> None:
    srv = listening()
    single = (f'<event xmlns="{NS}"><id>6f1c-0001</id><title>CPU high</title><severity>major</severity>'
              f"<state>open</state><category>System</category><node_ref><node><display_label>web01</display_label>"
              f"</node></node_ref></event>").encode()
    bulk = (f'<event_list xmlns="{NS}">'
            + "".join(f"<event><id>bulk-{n}</id><title>T{n}</title><sequence_number>{100 + n}</sequence_number></event>"
                      for n in range(5)) + "</event_list>").encode()
    with srv.client() as http:
        r = http.post("/omi/event", content=single, headers=XML)
        assert r.status_code == 200 and "<id>6f1c-0001</id>" in r.text and f'<event xmlns="{NS}">' in r.text
        r = http.post("/omi/event", content=bulk, headers={"Content-Type": "application/xml;type=collection"})
        assert r.status_code == 200, r.text
    from xml.etree import ElementTree as ET

    root = ET.fromstring(r.content)
    assert root.tag == f"{{{NS}}}event_list"
    answered = [(e.findtext(f"{{{NS}}}id"), e.findtext(f"{{{NS}}}sequence_number")) for e in root]
    assert answered == [(f"bulk-{n}", str(100 + n)) for n in range(5)]
    keys = events_of(home, "omi/event")
    assert keys[0] == {"ID": "6f1c-0001", "TITLE": "CPU high", "SEVERITY": "major", "STATE": "open",
                       "CATEGORY": "System", "NODE": "web01", "OMI_ID": "6f1c-0001"}
    assert [k["ID"] for k in keys[1:]] == [f"bulk-{n}" for n in range(5)]
    assert keys[1] == {"ID": "bulk-0", "OMI_ID": "bulk-0", "TITLE": "T0"}  # the sequence number belongs to the request only


def test_ping_health_and_metrics(home: Home, listening) -> None:
    srv = listening()
    with srv.client() as http:
        assert http.get("/omi").status_code == 200
        assert http.head("/omi").status_code == 200
        assert http.get("/omi/").status_code == 200
        m = http.get("/metrics")
        assert m.status_code == 200 and "ombridge_up 1" in m.text
        assert 'ombridge_http_requests_total{code="200"}' in m.text
    with srv.client(auth=None) as anonymous:
        assert anonymous.get("/healthz").text == "ok\n"
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/omi").status_code == 401


# -- bad input ------------------------------------------------------------------------------------

BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><event_change>&lol3;</event_change>')
EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><event_change>&e;</event_change>'


def test_bad_input_gets_a_clear_status_and_stores_nothing(home: Home, listening) -> None:
    srv = listening("--max-body", "4096")
    before = event_count(home)
    json_h = {"Content-Type": "application/json"}
    with srv.client() as http, srv.client(auth=None) as anonymous, srv.client(auth=(USER, "wrong-password")) as wrong:
        cases = [
            (http.post(change_path("X"), content=b"<event_change><changed_properties>", headers=XML), 400),
            (http.post(change_path("X"), content=BOMB, headers=XML), 400),
            (http.post(change_path("X"), content=EXTERNAL, headers=XML), 400),
            (http.post(change_path("X"), content=b"<other/>", headers=XML), 400),
            (http.post("/omi/event", content=b"<event><title>no id</title></event>", headers=XML), 400),
            (http.post(change_path("X"), content=change_body(), headers={"Content-Type": "text/plain"}), 415),
            (http.post(change_path("X"), content=change_body()), 415),
            (http.post(change_path("X"), content=b"<x>" + b"a" * 5000 + b"</x>", headers=XML), 413),
            (http.post("/omi/event", content=iter([b"<event_list>", b"x" * 3000, b"y" * 3000]), headers=XML), 413),
            (http.post("/omi/event_change/", content=change_body(), headers=XML), 404),
            (http.post("/omi/nothing", content=change_body(), headers=XML), 404),
            (http.get("/nope"), 404),
            (http.get(change_path("X")), 405),
            (http.put("/omi/event", content=b"<event/>", headers=XML), 405),
            (http.post(change_path("X") + "%FF", content=change_body(), headers=XML), 400),
            (http.post(change_path("X") + "%00", content=change_body(), headers=XML), 400),
            (http.post("/api/v1/events", content=b"{not json", headers=json_h), 400),
            (http.post("/api/v1/events", content=b"[1, 2]", headers=json_h), 400),
            (http.post("/api/v1/events", json={"topic": "event/update", "key": {"ID": 1, "X": [1]}}), 400),
            (http.post("/api/v1/events", json={"topic": "event/update", "key": {"ID": "A"}, "extra": 1}), 400),
            (http.post("/api/v1/events", content=b'{"topic": "event/update", "key": {"ID": NaN}}',
                       headers=json_h), 400),
            (http.post("/api/v1/events", json={"topic": "no/such", "key": {"A": "1"}}), 404),
            (http.post("/api/v1/events", json={"topic": "event/update", "key": {"ID": "A"}}), 422),
            (http.post("/api/v1/events", content=b"{}", headers={"Content-Type": "application/xml"}), 415),
            (anonymous.post(change_path("X"), content=change_body(), headers=XML), 401),
            (wrong.post(change_path("X"), content=change_body(), headers=XML), 401),
            (anonymous.get("/omi", headers={"Authorization": "Basic !!!not-base64"}), 401),
        ]
        for n, (response, expected) in enumerate(cases):
            assert response.status_code == expected, (n, response.status_code, response.text)
            assert response.text.strip(), n  # a reason, always
        assert cases[1][0].text.strip() == "DOCTYPE declarations are refused"
        assert cases[-2][0].headers["WWW-Authenticate"].startswith("Basic")
        assert cases[12][0].headers["allow"] == "POST"
        assert cases[21][0].json()["error"].startswith("topic no/such is not defined")
        assert "STATE" in cases[22][0].json()["error"]
        # the listener serves on after each of them, and nothing was stored
        assert http.get("/omi").status_code == 200
        assert anonymous.get("/healthz").status_code == 200
    assert event_count(home) == before
    web = status(home)["listener"]
    assert web["state"] == "listening" and web["auth_failures"] >= 3


def test_a_huge_body_is_refused_without_being_read(home: Home, listening) -> None:
    srv = listening()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        import base64

        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        sock.sendall((f"POST /omi/event HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                      f"Content-Type: application/xml\r\nContent-Length: {10 << 30}\r\n\r\n").encode())
        sock.sendall(b"<" * 65536)  # a few bytes of the promised 10 GiB; the answer does not wait for the rest
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()


def test_oversized_headers_are_refused_and_the_listener_serves_on(home: Home, listening) -> None:
    srv = listening()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            for n in range(200):  # 200 KB of headers, unauthenticated: bounded at 64 KB
                sock.sendall(b"X-Junk-%d: " % n + b"a" * 1000 + b"\r\n")
        except OSError:
            pass  # closed by the listener while we were still sending
        try:
            answer = sock.recv(4096)
        except OSError:
            pass
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")
    with srv.client(auth=None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200


def test_a_stop_under_load_loses_no_acknowledged_close(home: Home, listening) -> None:
    install(home, "slow_recorder")
    srv = listening()
    acked: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with srv.client() as http:
            for n in range(1000):
                try:
                    r = http.post(change_path(f"S{c}-{n}"), content=change_body(), headers=XML)
                except httpx.HTTPError:
                    return  # the listener stopped: this one was not acknowledged
                if r.status_code != 200:
                    return
                with lock:
                    acked.append(f"S{c}-{n}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 100, what="100 acknowledged closes")
    omb(home, "stop")  # drains the listener, then the Event Manager; open deliveries wait
    for t in threads:
        t.join()
    assert len(acked) < 4000
    install(home, "recorder")
    listening()
    wait_for(lambda: set(recorded(home)) >= set(acked), timeout=60, what="every acknowledged close delivered")


def test_failures_from_one_address_slow_down(home: Home, listening) -> None:
    srv = listening()
    with srv.client(auth=(USER, "wrong-password")) as wrong:
        assert [wrong.get("/omi").status_code for _ in range(3)] == [401, 401, 401]  # the allowance
        started = time.monotonic()
        r = wrong.get("/omi")  # throttled: answered at once, unchecked
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and time.monotonic() - started < 0.3
    with srv.client() as http:
        assert http.get("/omi").status_code == 429  # a password never seen waits its turn too
        time.sleep(1.0)  # (the Retry-After the listener asked for, not synchronisation)
        assert http.get("/omi").status_code == 200  # checked once the interval passed; the failures forgotten
    with srv.client(auth=(USER, "wrong-password")) as wrong:
        assert wrong.get("/omi").status_code == 401


# -- durability and concurrency ---------------------------------------------------------------------


def test_concurrent_clients_all_closes_delivered(home: Home, listening) -> None:
    install(home, "recorder")
    srv = listening()
    errors: list[object] = []

    def client(c: int) -> None:
        try:
            with srv.client() as http:
                for n in range(100):
                    r = http.post(change_path(f"C{c}/{n}"), content=change_body(), headers=XML)
                    if r.status_code != 200:
                        errors.append((c, n, r.status_code))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = {f"C{c}/{n}" for c in range(8) for n in range(100)}
    wait_for(lambda: set(recorded(home)) >= expected, timeout=60, what="800 closes delivered")
    web = status(home)["listener"]
    assert web["events"] == 800 and web["commits"] < 800  # concurrent requests shared commits


def test_kill_9_after_acknowledgement_loses_no_close(home: Home, listening) -> None:
    install(home, "slow_recorder")  # 20 ms a Close: acknowledged closes wait in the backlog
    srv = listening()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(c: int) -> None:
        with srv.client() as http:
            for n in range(200):
                if stop.is_set():
                    return
                event_id = f"K{c}-{n}"
                try:
                    r = http.post(change_path(event_id), content=change_body(), headers=XML)
                except httpx.HTTPError:
                    return  # the supervisor died under us: not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.append(event_id)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 150, what="150 acknowledged closes")
    os.kill(srv.pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    wait_for(lambda: not alive(srv.pid), what="the supervisor gone")
    delivered_before = set(recorded(home))
    assert set(acked) - delivered_before, "some acknowledged closes must still have been waiting"
    install(home, "recorder")
    listening()  # restart (same home): the backlog is delivered
    wait_for(lambda: set(recorded(home)) >= set(acked), timeout=60, what="every acknowledged close delivered")


# -- the JSON API -----------------------------------------------------------------------------------


def test_json_api_feeds_a_command_subscriber(home: Home, listening) -> None:
    out = home.root / "tasks.out"
    omb(home, "topic", "add", "task/add", "--key", "TASK", "--key", "OWNER")
    sid = omb(home, "subscriber", "add", "--command", f"printf '%s %s\\n' &TASK &OWNER >> {out}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/*")
    omb(home, "topic", "add", "task/idle", "--key", "TASK")
    omb(home, "subscriber", "filter", "add", sid, "task/*", "TASK", "T.*")
    srv = listening()
    with srv.client() as http:
        r = http.post("/api/v1/events", json={"topic": "task/add", "key": {"TASK": "T1", "OWNER": "ana; rm -rf /"}})
        assert r.status_code == 201 and r.json()["stored"] is True and r.json()["deliveries"] == 1
        event_id = r.json()["event_id"]
        nobody = http.post("/api/v1/events", json={"topic": "task/idle", "key": {"TASK": "X9"}})
        assert nobody.status_code == 200 and nobody.json() == {
            "stored": False, "event_id": None, "deliveries": 0,
            "message": 'nobody listens: the event was not stored (send "force": true to store it anyway)'}
        forced = http.post("/api/v1/events", json={"topic": "task/idle", "key": {"TASK": "X9"}, "force": True})
        assert forced.status_code == 201 and forced.json()["deliveries"] == 0
        as_text = http.post("/api/v1/events", json={"topic": "task/add", "key": '{"TASK": "T2", "OWNER": "bo"}'})
        assert as_text.status_code == 201
    # Two action lanes may run the two deliveries in either order.
    wait_for(lambda: out.exists() and sorted(out.read_text().splitlines()) == ["T1 ana; rm -rf /", "T2 bo"],
             what="the command's output")
    listed = json.loads(omb(home, "events", "list", "--json").stdout)
    assert event_id in [e["id"] for e in listed]


# -- TLS ----------------------------------------------------------------------------------------------


def test_tls_serves_https_and_refuses_plain_http(home: Home, listening, tmp_path) -> None:
    install(home, "recorder")
    cert, key = make_cert(tmp_path)
    import ssl

    srv = listening("--tls-cert", str(cert), "--tls-key", str(key), verify=ssl.create_default_context(cafile=str(cert)))
    assert srv.url.startswith("https://127.0.0.1:") and srv.status["listener"]["tls"] is True
    with srv.client() as http:
        assert http.post(change_path("TLS 1/ü"), content=change_body(), headers=XML).status_code == 200
    wait_for(lambda: recorded(home) == ["TLS 1/ü"], what="the close over HTTPS")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=10)
    with pytest.raises(httpx.ConnectError):  # an unknown certificate is not trusted by a verifying client
        httpx.get(f"https://127.0.0.1:{srv.port}/healthz", timeout=10)
    with srv.client() as http:
        assert http.get("/omi").status_code == 200  # still serving


# -- lifecycle and configuration ----------------------------------------------------------------------


def test_status_shows_the_listener_and_stop_drains_it(home: Home, listening) -> None:
    srv = listening()
    with srv.client() as http:
        assert http.get("/omi").status_code == 200
    text = omb(home, "status").stdout
    assert f"listener      listening, {srv.url}/omi, plain HTTP" in text
    assert status(home)["listener"]["requests"] >= 1
    omb(home, "stop")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/healthz", timeout=5)
    assert "HTTP listener stopped after" in (home.log_dir / "ombridge.log").read_text()


def test_nothing_listens_unless_asked(home: Home) -> None:
    omb(home, "start")
    try:
        assert status(home)["listener"] == {"state": "off"}
        assert "listener      off" in omb(home, "status").stdout
        conns = open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()
        pid = status(home)["supervisor"]["pid"]
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        tcp_inodes = {f"socket:[{line.split()[9]}]" for line in conns.splitlines()[1:] if len(line.split()) > 9}
        assert not tcp_inodes & inodes
    finally:
        omb(home, "stop")


def test_the_config_file_is_read_and_checked(home: Home, listening) -> None:
    conf = home.root / "conf" / "ombridge.conf"
    conf.write_text('[listen]\naddress = "127.0.0.1:0"\nomi_base = "/opr/sync"\nmax_body = 2048\n')
    r = omb(home, "start")
    try:
        assert "listening on http://127.0.0.1:" in r.stdout and "/opr/sync" in r.stdout
        web = status(home)["listener"]
        assert web["omi_base"] == "/opr/sync" and web["max_body"] == 2048
        with httpx.Client(base_url=web["url"], auth=(USER, PASSWORD)) as http:
            assert http.get("/opr/sync").status_code == 200
            assert http.get("/omi").status_code == 404
    finally:
        omb(home, "stop")
    conf.write_text('[listen]\naddres = "127.0.0.1:0"\n')
    bad = omb(home, "start", check=False)
    assert bad.returncode == 2 and "unknown setting(s) listen.addres" in bad.stderr


def test_a_busy_port_or_bad_tls_fails_the_start_with_the_reason(home: Home, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = omb(home, "start", "--listen", f"127.0.0.1:{port}", check=False)
        assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    r = omb(home, "start", "--listen", "127.0.0.1:0", "--tls-cert", str(bogus), "--tls-key", str(bogus), check=False)
    assert r.returncode == 1 and f"the TLS certificate {bogus} is not a PEM certificate" in r.stderr
    r = omb(home, "start", "--listen", "nonsense", check=False)
    assert r.returncode == 2 and "bad listen address" in r.stderr
    r = omb(home, "start", "--tls-cert", str(bogus), "--tls-key", str(bogus), check=False)
    assert r.returncode == 2 and "need --listen" in r.stderr
    assert status(home)["supervisor"]["state"] == "stopped"


def test_passwords_never_in_files_logs_or_process_list(home: Home, listening) -> None:
    install(home, "recorder")
    srv = listening()
    seen_in_ps: list[str] = []
    with srv.client() as http, srv.client(auth=(USER, PASSWORD + "-wrong")) as wrong:
        for n in range(20):
            assert http.post(change_path(f"P{n}"), content=change_body(), headers=XML).status_code == 200
        assert wrong.get("/omi").status_code == 401
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
                environ = open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                continue
            if PASSWORD.encode() in cmdline or PASSWORD.encode() in environ:
                seen_in_ps.append(pid)
    omb(home, "user", "passwd", USER, stdin=PASSWORD + "-2\n")
    omb(home, "stop")
    assert not seen_in_ps
    for path in home.root.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert (home.db.stat().st_mode & 0o077) == 0 and (home.datafiles.stat().st_mode & 0o077) == 0

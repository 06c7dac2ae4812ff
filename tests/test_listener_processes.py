"""The HTTP listener in processes of its own (`--listen-processes N`, bridge/web/workers.py): real
supervisors, real listener processes accepting on one socket, a real HTTP client."""

from __future__ import annotations

import os
import signal
import socket
import ssl

import httpx
import pytest
from conftest import alive, status, wait_for
from console_support import csrf_of, login
from web_support import (
    PASSWORD,
    USER,
    XML,
    change_body,
    change_path,
    event_count,
    make_cert,
    omb,
)

from bridge.home import Home

pytestmark = pytest.mark.xdist_group("listener-processes")
TWO = ("--listen", "127.0.0.1:0", "--listen-processes", "2")


def _fresh(srv, **kw) -> httpx.Client:
    # A new connection per request: the kernel hands each to one of the processes.
    return srv.client(headers={"Connection": "close"}, **kw)


def test_closes_are_acknowledged_once_stored_and_status_sees_one_listener(home: Home, listening) -> None:
    srv = listening(*TWO)
    web = srv.status["listener"]
    assert web["state"] == "listening" and web["processes"] == 2 and web["serving"] == 2
    pids = web["pids"]
    assert len(set(pids)) == 2 and all(alive(p) for p in pids) and srv.pid not in pids
    with _fresh(srv) as client:
        for n in range(40):
            r = client.post(change_path(f"LP-{n}"), content=change_body(), headers=XML)
            assert r.status_code == 200, r.text
            assert event_count(home) >= n + 1  # stored before the answer, whichever process answered
    wait_for(lambda: status(home)["backlog"]["open"] == 0 and status(home)["eventmanager"]["delivered"] >= 40,
             timeout=30)
    web = status(home)["listener"]
    assert web["requests"] >= 40 and web["by_status"]["200"] >= 40 and web["events"] == 40
    assert sum(web["per_process"]) == web["requests"] and len(web["per_process"]) == 2
    r = omb(home, "status")
    assert "listening" in r.stdout and "in 2 of 2 processes" in r.stdout and "40 events" in r.stdout
    metrics = httpx.get(srv.url + "/metrics", auth=(USER, PASSWORD)).text
    assert "ombridge_http_listener_processes 2" in metrics and "ombridge_http_events_total 40" in metrics


def test_the_login_throttle_counts_across_processes(home: Home, listening) -> None:
    srv = listening(*TWO)
    codes = []
    with _fresh(srv, auth=(USER, "wrong-password")) as client:
        for _ in range(8):
            codes.append(client.get("/omi").status_code)
    # The throttle lets 3 failures through at once, then one check at a time: 429s follow, as
    # with one process, however the connections were spread.
    assert codes[:3] == [401, 401, 401] and 429 in codes[3:], codes
    assert status(home)["listener"]["auth_throttled"] >= 1


def test_a_console_session_and_its_csrf_token_hold_in_every_process(home: Home, listening) -> None:
    srv = listening(*TWO)
    client = login(srv)
    client.headers["Connection"] = "close"
    token = csrf_of(client)
    for _ in range(4):  # each request a new connection: a token signed by one process is checked by any
        done = client.post("/ui/subscribers/1/pause", data={"csrf": token, "confirm": "yes"})
        assert done.status_code == 303 and done.headers["location"] == "/ui/subscribers/1", done.text
        done = client.post("/ui/subscribers/1/resume", data={"csrf": token, "confirm": "yes"})
        assert done.status_code == 303 and done.headers["location"] == "/ui/subscribers/1", done.text
    assert client.post("/ui/subscribers/1/pause", data={"csrf": "forged", "confirm": "yes"}).status_code == 403
    page = client.get("/ui/status")
    assert page.status_code == 200 and "listening" in page.text  # the supervisor's status, through the pipe


def test_a_listener_process_that_dies_is_started_again(home: Home, listening) -> None:
    srv = listening(*TWO)
    with _fresh(srv) as client:
        for n in range(10):
            assert client.post(change_path(f"BEFORE-{n}"), content=change_body(), headers=XML).status_code == 200
    before = status(home)["listener"]
    assert before["events"] == 10
    victim = before["pids"][0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: status(home)["listener"]["revived"] == 1 and status(home)["listener"]["serving"] == 2, timeout=15)
    web = status(home)["listener"]
    assert victim not in web["pids"] and web["state"] == "listening"
    with _fresh(srv) as client:
        for n in range(10):
            assert client.post(change_path(f"AFTER-{n}"), content=change_body(), headers=XML).status_code == 200
    after = status(home)["listener"]
    assert after["events"] == 20 and after["requests"] >= before["requests"] + 10  # the dead one's counts kept
    assert "exited with status -9: starting it again" in (home.log_dir / "ombridge.log").read_text()


def test_the_processes_end_with_a_supervisor_killed_and_the_port_is_free_again(home: Home, listening) -> None:
    srv = listening(*TWO)
    pids = srv.status["listener"]["pids"]
    with _fresh(srv) as client:
        assert client.post(change_path("BEFORE-KILL"), content=change_body(), headers=XML).status_code == 200
    os.kill(srv.pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
    again = listening("--listen", f"127.0.0.1:{srv.port}", "--listen-processes", "2")
    assert again.port == srv.port
    with _fresh(again) as client:
        assert client.post(change_path("AFTER-KILL"), content=change_body(), headers=XML).status_code == 200


def test_a_graceful_stop_drains_every_process(home: Home, listening) -> None:
    srv = listening(*TWO)
    pids = srv.status["listener"]["pids"]
    with _fresh(srv) as client:
        assert client.post(change_path("DRAINED"), content=change_body(), headers=XML).status_code == 200
    omb(home, "stop")
    assert not any(alive(p) for p in pids)
    log = (home.log_dir / "ombridge.log").read_text()
    assert log.count("HTTP listener stopped after") == 2 and "killed" not in log


def test_tls_in_every_process(home: Home, listening, tmp_path) -> None:
    cert, key = make_cert(tmp_path)
    srv = listening(*TWO, "--tls-cert", str(cert), "--tls-key", str(key),
                    verify=ssl.create_default_context(cafile=str(cert)))
    assert srv.url.startswith("https://")
    with _fresh(srv) as client:
        for n in range(6):
            assert client.post(change_path(f"TLS-{n}"), content=change_body(), headers=XML).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(srv.url.replace("https", "http") + "/omi", auth=(USER, PASSWORD), timeout=5)


def test_a_bad_processes_setting_is_one_sentence(home: Home) -> None:
    (home.root / "conf" / "ombridge.conf").write_text('[listen]\naddress = "127.0.0.1:0"\nprocesses = "two"\n')
    r = omb(home, "start", check=False)
    assert r.returncode != 0 and "listen.processes is a number from 0" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = omb(home, "start", "--listen", "127.0.0.1:0", "--listen-processes", "99", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_a_busy_port_fails_the_start_in_one_sentence_and_starts_no_process(home: Home) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        r = omb(home, "start", "--listen", f"127.0.0.1:{taken.getsockname()[1]}", "--listen-processes", "2",
                check=False)
    finally:
        taken.close()
    assert r.returncode != 0 and "cannot listen on 127.0.0.1:" in r.stderr and "Traceback" not in r.stderr
    assert status(home)["supervisor"]["state"] == "stopped"
    log = home.log_dir / "ombridge.log"
    assert "listener process" not in (log.read_text() if log.exists() else "")  # bound first: none started

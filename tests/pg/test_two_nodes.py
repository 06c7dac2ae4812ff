"""Two real supervisors, two homes, one real PostgreSQL database (issue 24): work sent on one node
wakes the other at once (LISTEN/NOTIFY), a command subscriber's events sent from both run once
each, and a node killed with -9 in the middle of a burst of Closes loses none: the survivor takes
its claims over once it stops heartbeating."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE, alive, status, stop_quietly, wait_for
from conftest import run_ombridge as omb
from pg_support import PgServer

from bridge.eventcore import nodes
from bridge.home import Home

POLL = "60"  # seconds: far longer than any wait below, so only a wake-up explains a quick delivery


def make_home(root: Path, name: str) -> Home:
    (root / "conf" / "backsync").mkdir(parents=True)
    shutil.copy(EXAMPLE, root / "conf" / "backsync" / "OMBackSync.pl")
    os.chmod(root / "conf" / "backsync" / "OMBackSync.pl", 0o600)
    (root / "conf" / "ombridge.conf").write_text(f'[store]\nnode = "{name}"\n')
    return Home(root)


@pytest.fixture
def cluster(tmp_path: Path, pg_server: PgServer, pg_db: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Home, Home]]:
    """Homes a and b on one database (OMBRIDGE_STORE, inherited by every command); both
    supervisors stopped (or killed) afterwards."""
    monkeypatch.setenv("OMBRIDGE_STORE", pg_server.url(pg_db))
    monkeypatch.setenv("PGPASSFILE", pg_server.passfile)
    a, b = make_home(tmp_path / "a", "node-a"), make_home(tmp_path / "b", "node-b")
    yield a, b
    for h in (a, b):
        stop_quietly(h, [])


def start(home: Home) -> int:
    omb(home, "start", "--poll", POLL)
    return status(home)["supervisor"]["pid"]


def deliveries(home: Home) -> list[dict]:
    return json.loads(omb(home, "deliveries", "list", "--limit", "100000", "--json").stdout)


def command_subscriber(home: Home, out: Path) -> None:
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", f'echo "&TASK" >> {out}').stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")


def test_an_event_sent_on_one_node_wakes_the_other_at_once(cluster, tmp_path: Path) -> None:
    a, b = cluster
    out = tmp_path / "ran.txt"
    command_subscriber(a, out)
    start(b)  # only b runs: a's doorbell rings nobody, and b polls every 60 s
    begun = time.monotonic()
    omb(a, "send", "task/change", '{"TASK": "T-1"}')
    wait_for(lambda: out.exists() and out.read_text() == "T-1\n", timeout=15, what="b ran a's event")
    assert time.monotonic() - begun < 15  # well inside the 60 s poll


def test_events_sent_from_both_nodes_run_once_each(cluster, tmp_path: Path) -> None:
    a, b = cluster
    out = tmp_path / "ran.txt"
    command_subscriber(a, out)
    start(a)
    start(b)
    for n in range(15):
        omb(a, "send", "task/change", json.dumps({"TASK": f"A-{n}"}))
        omb(b, "send", "task/change", json.dumps({"TASK": f"B-{n}"}))
    wait_for(lambda: all(d["status"] == "done" for d in deliveries(a)) and len(deliveries(a)) == 30,
             timeout=60, what="every command ran")
    ran = Counter(out.read_text().split())
    assert ran == Counter([f"A-{n}" for n in range(15)] + [f"B-{n}" for n in range(15)])
    listed = {n["name"]: n for n in status(a)["nodes"]}
    assert listed["node-a"]["state"] == listed["node-b"]["state"] == "running"


def closed_ids(*homes: Home) -> Counter[str]:
    found: Counter[str] = Counter()
    for h in homes:
        if h.output.exists():
            found.update(line.split()[-1] for line in h.output.read_text().splitlines() if " Close " in line)
    return found


SLOW = r"""use strict;
use warnings;
sub OMBackSync {
    my ($op, $id) = @_;
    select(undef, undef, undef, 0.002);    # a ticket system's 2 ms: the burst outlives the kill
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/OMBSOutput.txt") or die $!;
    print {$fh} "x $op $id\n";
    close $fh;
    return 1;
}
1;
"""


def test_a_node_killed_mid_burst_loses_no_close(cluster) -> None:
    a, b = cluster
    for h in (a, b):
        h.script.write_text(SLOW)
    ids = [f"K-{n}" for n in range(4000)]
    pid_a = start(a)
    start(b)
    omb(a, "close", "-", stdin="\n".join(ids) + "\n")
    wait_for(lambda: sum(closed_ids(a).values()) >= 200, timeout=60, what="node a closing")
    os.kill(pid_a, signal.SIGKILL)
    wait_for(lambda: not alive(pid_a), timeout=10, what="node a gone")
    killed_at = time.monotonic()
    wait_for(lambda: all(d["status"] == "done" for d in deliveries(b)), timeout=120,
             what="node b delivered every Close")
    took = time.monotonic() - killed_at
    assert took > nodes.DEAD_AFTER - 1  # a's claims waited for it to be found dead, not for their leases
    closed = closed_ids(a, b)
    assert set(closed) == set(ids)  # nothing lost
    repeated = sum(closed.values()) - len(ids)
    assert repeated <= 500 + 10, repeated  # the Close window of one node (bridge/delivery/lanes.py), plus actions in flight
    listed = {n["name"]: n for n in status(b)["nodes"]}
    assert listed["node-a"]["state"] == "dead" and listed["node-a"]["leases"] == 0
    assert listed["node-b"]["state"] == "running"


def test_the_database_restarted_mid_burst_loses_nothing_and_both_nodes_recover(cluster, pg_server: PgServer,
                                                                               tmp_path: Path) -> None:
    import httpx
    from web_support import PASSWORD, USER

    a, b = cluster
    for h in (a, b):
        h.script.write_text(SLOW)
    omb(a, "user", "add", USER, stdin=PASSWORD + "\n")
    omb(a, "start", "--poll", POLL, "--listen", "127.0.0.1:0")
    url = status(a)["listener"]["url"]
    start(b)
    ids = [f"R-{n}" for n in range(2000)]
    omb(a, "close", "-", stdin="\n".join(ids) + "\n")
    wait_for(lambda: sum(closed_ids(a, b).values()) >= 300, timeout=60, what="both nodes closing")
    console = _console_session(url)  # its connections come from the listener's pool
    assert console.get("/ui/deliveries").status_code == 200
    children = {h.root: status(h)["ombacksync"]["pid"] for h in (a, b)}
    pg_server.halt()
    try:
        # Down: nothing new is acknowledged, each refusal says why.
        r = omb(b, "send", "task/change", '{"TASK": "T-1"}', check=False)
        assert r.returncode == 1 and "unreachable" in r.stderr and "Traceback" not in r.stderr
        with httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=30) as web:
            for _ in range(20):  # OMi retries: each is refused, the log says so once (issue 28)
                r = web.post("/api/v1/events", json={"topic": "ombacksync/close", "key": {"ID": "late"}})
                assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
            health = web.get("/healthz")
            assert health.status_code == 503 and "cannot be reached" in health.text
            scrape = web.get("/metrics")
            assert scrape.status_code == 503 and "cannot be reached" in scrape.text, scrape.text
        page = console.get("/ui/deliveries")
        assert page.status_code == 503 and "cannot be reached now" in page.text, page.text
        st = json.loads(omb(a, "status", "--json", check=False).stdout)
        assert any("cannot be read" in reason for reason in st["degraded"]), st["degraded"]
    finally:
        pg_server.resume()
    wait_for(lambda: all(d["status"] == "done" for d in deliveries(a)) and len(deliveries(a)) == len(ids),
             timeout=180, what="every Close delivered after the restart")
    closed = closed_ids(a, b)
    assert set(closed) == set(ids)
    assert sum(closed.values()) - len(ids) <= 2 * 500  # at most one Close window per node repeated
    with httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=30) as web:
        assert web.get("/healthz").status_code == 200
    assert console.get("/ui/deliveries").status_code == 200  # the pool's broken connections were replaced
    console.close()
    wait_for(lambda: {n["name"]: n["state"] for n in status(a)["nodes"]} == {"node-a": "running", "node-b": "running"},
             timeout=30, what="both nodes heartbeating again")
    assert status(a)["degraded"] == [] and status(b)["degraded"] == []
    said = [line for line in (a.root / "log" / "ombridge.log").read_text().splitlines()
            if "could not store events received over HTTP" in line and "answers again" not in line]
    assert len(said) == 1 and "ERROR" in said[0], said  # not one line per refused request
    with httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=30) as web:  # (said by a commit or a probe)
        r = web.post("/api/v1/events", json={"topic": "event/update", "key": {"ID": "AFTER-1", "STATE": "open"},
                                              "force": True})
        assert r.status_code == 201, r.text
    wait_for(lambda: "could not store events received over HTTP: the event core answers again after" in
             (a.root / "log" / "ombridge.log").read_text(), timeout=30, what="the end of the outage said")
    # issue 28: the perl children rode the outage out (no Init again, no "ombacksync is backoff")
    for h in (a, b):
        ob = status(h)["ombacksync"]
        assert (ob["pid"], ob["state"], ob["restarts"]) == (children[h.root], "running", 0)
        assert (h.tmp / "OMBSOutput.txt").read_text().count(" Init") == 1


def _console_session(url: str):
    """A console session on the listener at ``url`` (logged in as a browser would)."""
    import httpx
    from console_support import form_token
    from web_support import PASSWORD, USER

    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    token = form_token(client.get("/ui/login").text, "token")
    r = client.post("/ui/login", data={"token": token, "user": USER, "password": PASSWORD, "next": "/ui/status"})
    assert r.status_code == 303, r.text
    return client


def test_a_frozen_node_that_finds_its_name_taken_stops_and_one_node_remains(cluster) -> None:
    """Issue 28: node-a pauses past DEAD_AFTER (a VM paused), a second home starts under its
    name; when node-a resumes it stops by itself, saying why, instead of running as the same node."""
    a, b = cluster
    (b.root / "conf" / "ombridge.conf").write_text('[store]\nnode = "node-a"\n')
    a_pid = start(a)
    os.kill(a_pid, signal.SIGSTOP)
    try:
        wait_for(lambda: json.loads(omb(b, "nodes", "list", "--json").stdout)[0]["state"] == "dead",
                 timeout=30, what="node-a taken for dead")
        b_pid = start(b)
    finally:
        os.kill(a_pid, signal.SIGCONT)
    wait_for(lambda: not alive(a_pid), timeout=60, what="the resumed node-a stopped by itself")
    log = (a.root / "log" / "ombridge.log").read_text()
    assert "node 'node-a' was started again on" in log and "this one stops; give each home a name" in log
    st = status(b)
    assert st["supervisor"]["pid"] == b_pid and st["degraded"] == []
    (only,) = st["nodes"]
    assert (only["home"], only["pid"], only["state"]) == (str(b.root), b_pid, "running")
    omb(b, "close", "AFTER-1")
    wait_for(lambda: [d["status"] for d in deliveries(b)] == ["done"], timeout=30, what="b serves on")

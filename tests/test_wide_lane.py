"""Issue 31, the wide lane: ``[ombacksync] children = N`` perl children, and action lanes that a
slow destination cannot take over. Real supervisors, real perl children, real commands, and the
stand-in OMi gateway (a real HTTP server on 127.0.0.1).

- N children each run Init once; Closes run side by side, one ID never in two children at once,
  the Closes of one ID in the order they were sent;
- a hung Close costs only its own child: the others go on, it restarts on its own;
- ``restart ombacksync`` restarts them all; a refused restart keeps them all;
- status (text and JSON) and /metrics show each child;
- no subscriber holds more than its share of the action lanes; the sync back to OMi has a lane
  of its own, so a gateway that answers late holds up no command.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from conftest import run_ombridge as omb
from conftest import status, stop_quietly, wait_for
from omi_gateway import GW_PASSWORD, SYNC, Gateway, configure
from test_omi_sync import event_list, event_xml
from web_support import XML

from bridge.home import Home

SCRIPT = r"""use strict;
use warnings;
use Time::HiRes ();
my $log = "$ENV{OvDataDir}/closes.log";
sub note { open(my $fh, '>>', $log) or die "$log: $!"; print $fh "@_\n"; close $fh }
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') { note("init $$"); return 1 }
    note(sprintf "start %s %d %.6f", $id, $$, Time::HiRes::time());
    sleep 600 if $id =~ /^hang/;
    my ($ms) = $id =~ /-(\d+)ms$/;
    Time::HiRes::sleep(($ms // 30) / 1000);
    print "output of $id\n";
    note(sprintf "end %s %d %.6f", $id, $$, Time::HiRes::time());
    return 1;
}
1;
"""


def wide(home: Home, children: int, script: str = SCRIPT) -> None:
    home.script.write_text(script)
    conf = home.root / "conf" / "ombridge.conf"
    conf.write_text(f"[ombacksync]\nchildren = {children}\n")


def notes(home: Home) -> list[list[str]]:
    path = home.root / "closes.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def ended(home: Home) -> list[str]:
    return [n[1] for n in notes(home) if n[0] == "end"]


@pytest.fixture
def started(home: Home):
    pids: list[int] = []

    def start(*options: str) -> dict:
        omb(home, "start", *options)
        st = status(home)
        pids.append(st["supervisor"]["pid"])
        return st

    yield start
    stop_quietly(home, pids)


def child_pids(home: Home) -> list[int]:
    return [c["pid"] for c in status(home)["ombacksync"]["children"]]


@pytest.mark.both_stores
def test_closes_run_side_by_side_one_id_in_one_child_at_a_time_in_the_order_sent(home: Home, started) -> None:
    wide(home, 4)
    st = started()
    assert st["ombacksync"]["state"] == "running" and st["ombacksync"]["size"] == 4
    assert len({c["pid"] for c in st["ombacksync"]["children"]}) == 4
    ids = [f"{name}-40ms" for name in "ABCDEF"] * 3  # each ID three times, interleaved
    omb(home, "close", "-", stdin="".join(i + "\n" for i in ids))
    wait_for(lambda: len(ended(home)) == len(ids), timeout=60, what="every Close ran")

    lines = notes(home)
    assert sorted(n[1] for n in lines if n[0] == "init") == sorted(str(p) for p in child_pids(home))  # Init once each
    spans: dict[str, list[tuple[float, float, str]]] = {}
    open_at: dict[tuple[str, str], float] = {}
    for kind, *rest in lines:
        if kind == "start":
            open_at[(rest[0], rest[1])] = float(rest[2])
        elif kind == "end":
            spans.setdefault(rest[0], []).append((open_at.pop((rest[0], rest[1])), float(rest[2]), rest[1]))
    for close_id, runs in spans.items():  # one ID is never in two children at once
        runs.sort()
        assert len(runs) == 3
        assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:])), (close_id, runs)
    everything = sorted(r for runs in spans.values() for r in runs)
    assert any(b[0] < a[1] and a[2] != b[2] for a, b in zip(everything, everything[1:])), "nothing ran side by side"
    assert len({r[2] for r in everything}) >= 2

    # The Closes of one ID ran in the order they were sent: their deliveries' attempts began in id order.
    rows = json.loads(omb(home, "deliveries", "list", "--json", "--limit", "100").stdout)
    for close_id in spans:
        mine = sorted((r for r in rows if close_id in json.dumps(r.get("key") or r)), key=lambda r: r["id"])
        started_at = [json.loads(omb(home, "deliveries", "show", str(r["id"]), "--json").stdout)["attempt_log"][0]
                      ["started_at"] for r in mine]
        assert len(started_at) == 3 and started_at == sorted(started_at), (close_id, started_at)

    # Each Close's output tail is its own.
    show = json.loads(omb(home, "deliveries", "show", str(rows[0]["id"]), "--json").stdout)
    tail = show["attempt_log"][-1]["output"]
    assert tail.count("output of ") == 1


def test_a_hung_close_costs_only_its_own_child(home: Home, started) -> None:
    wide(home, 2)
    started()
    omb(home, "subscriber", "set", "1", "--timeout", "15")
    omb(home, "restart", "ombacksync")  # (the timeout applies from the next start)
    before = child_pids(home)
    omb(home, "close", "hang-1")
    wait_for(lambda: any(n[0] == "start" and n[1] == "hang-1" for n in notes(home)), what="the hang began")
    others = [f"X{n}-20ms" for n in range(12)]
    omb(home, "close", *others)
    wait_for(lambda: set(others) <= set(ended(home)), timeout=12, what="the other Closes ran beside the hang")
    children = status(home)["ombacksync"]["children"]
    hung = [c for c in children if c["current"] and c["current"]["id"] == "hang-1"]
    assert len(hung) == 1, children  # still on it: the others did not wait for it
    text = omb(home, "status").stdout
    assert "on 'hang-1' for" in text and "child 2" in text

    wait_for(lambda: status(home)["ombacksync"]["restarts"] == 1, timeout=40, what="the hung child killed")
    wait_for(lambda: status(home)["ombacksync"]["state"] == "running", timeout=30, what="it started again")
    after = child_pids(home)
    kept = [p for p in before if p in after]
    assert len(kept) == 1 and hung[0]["pid"] not in after  # only the hung one was replaced


def test_a_child_killed_mid_stream_starts_again_while_the_others_go_on(home: Home, started) -> None:
    # A storm keeps the stream going: the killed child must not wait for its end to come back.
    import os
    import signal

    wide(home, 2)
    started()
    omb(home, "close", "-", stdin="".join(f"S{n}-100ms\n" for n in range(150)))  # ~7.5 s on two children
    wait_for(lambda: len(ended(home)) >= 4, what="the storm under way")
    victim = child_pids(home)[1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in child_pids(home) and status(home)["ombacksync"]["state"] == "running",
             timeout=30, what="the killed child started again")
    assert len(set(ended(home))) < 150  # (while the storm still ran)
    wait_for(lambda: len(set(ended(home))) == 150, timeout=60, what="every Close of the storm ran")


def test_restart_restarts_every_child_and_a_refused_one_keeps_them_all(home: Home, started) -> None:
    wide(home, 3)
    started()
    first = child_pids(home)
    omb(home, "restart", "ombacksync")
    second = child_pids(home)
    assert len(set(second)) == 3 and not set(first) & set(second)
    assert len([n for n in notes(home) if n[0] == "init"]) == 6

    home.script.write_text(SCRIPT.replace("sub OMBackSync {", "sub OMBackSync { my $x = ;"))
    r = omb(home, "restart", "ombacksync", check=False)
    assert r.returncode != 0 and "syntax error" in (r.stdout + r.stderr)
    assert child_pids(home) == second
    assert status(home)["ombacksync"]["state"] == "running"


def test_metrics_show_each_child(home: Home, listening) -> None:
    wide(home, 2)
    srv = listening()
    omb(home, "close", "M1", "M2", "M3")
    wait_for(lambda: len(ended(home)) == 3, what="three Closes")
    with srv.client() as http:
        text = http.get("/metrics").text
    assert 'ombridge_ombacksync_child_up{child="1"} 1' in text
    assert 'ombridge_ombacksync_child_up{child="2"} 1' in text
    closes = [line for line in text.splitlines() if line.startswith("ombridge_ombacksync_child_closes_total")]
    assert len(closes) == 2 and sum(float(line.split()[-1]) for line in closes) == 3


def test_one_slow_subscriber_holds_no_more_than_its_share_of_the_action_lanes(home: Home, started,
                                                                                tmp_path: Path) -> None:
    slow_done, fast_done, gate = tmp_path / "slow-done", tmp_path / "fast-done", tmp_path / "gate"
    omb(home, "topic", "add", "t/slow", "--key", "N")
    omb(home, "topic", "add", "t/fast", "--key", "N")
    slow = omb(home, "subscriber", "add", "--command",  # (a destination that answers when the test says)
               f"until [ -e {gate} ]; do sleep 0.05; done; echo &N >> {slow_done}").stdout.strip()
    fast = omb(home, "subscriber", "add", "--command", f"echo &N >> {fast_done}").stdout.strip()
    omb(home, "subscriber", "topic", "add", slow, "t/slow")
    omb(home, "subscriber", "topic", "add", fast, "t/fast")
    st = started("--workers", "2")  # one lane at most for one subscriber (half of them)
    assert st["eventmanager"]["per_subscriber"] == 1
    for n in range(4):
        omb(home, "send", "t/slow", json.dumps({"N": str(n)}))
    wait_for(lambda: status(home)["eventmanager"]["held"].get(slow) == 1, what="the slow one took its lane")
    omb(home, "send", "t/fast", '{"N": "1"}')
    wait_for(fast_done.exists, timeout=10, what="the fast subscriber's delivery ran")
    assert not slow_done.exists()  # it ran while the slow one still held its lane: not behind it
    assert status(home)["eventmanager"]["held"] == {slow: 1}
    gate.touch()
    wait_for(lambda: len(slow_done.read_text().split()) == 4 if slow_done.exists() else False,
             what="the slow ones ran afterwards")


def test_per_subscriber_above_the_lanes_is_refused(home: Home) -> None:
    r = omb(home, "start", "--workers", "2", "--per-subscriber", "3", check=False)
    assert r.returncode != 0 and "--per-subscriber 3 is more than the 2 action lanes" in r.stderr
    assert "Traceback" not in r.stderr


def test_children_out_of_range_is_refused_in_one_sentence(home: Home) -> None:
    wide(home, 0)
    r = omb(home, "start", check=False)
    assert r.returncode != 0 and "children must be a whole number from 1 to 64" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_late_gateway_holds_up_no_command(home: Home, listening, tmp_path: Path) -> None:
    # The sync back has a lane of its own: with one action lane, a gateway that takes its time
    # to answer still leaves that lane to a command of another topic.
    gateway = Gateway().start()
    release = threading.Event()
    try:
        gateway.before_answer = lambda request: release.wait(20)
        configure(home.root, gateway.url)
        omb(home, "omi", "password", stdin=GW_PASSWORD + "\n" + GW_PASSWORD + "\n")
        done = tmp_path / "done"
        omb(home, "topic", "add", "t/x", "--key", "N")
        sid = omb(home, "subscriber", "add", "--command", f"echo &N >> {done}").stdout.strip()
        omb(home, "subscriber", "topic", "add", sid, "t/x")
        srv = listening("--workers", "1")
        with srv.client() as http:
            r = http.post("/omi/event", content=event_list(event_xml("omi-1", 1, original_id="INC-1")), headers=XML)
            assert r.status_code == 200, r.text
        omb(home, "omi", "close", "INC-1")
        wait_for(lambda: any(q["path"] == SYNC + "event_change/omi-1" for q in gateway.requests),
                 what="the gateway got the close")
        omb(home, "send", "t/x", '{"N": "7"}')
        wait_for(done.exists, timeout=10, what="the command ran while the gateway was still answering")
        assert not release.is_set()
        assert any(lane["name"] == "omi" for lane in status(home)["eventmanager"]["lanes"])
    finally:
        release.set()
        gateway.stop()


TICKET_SCRIPT = r"""use strict;
use warnings;
use HTTP::Tiny;
my $http;
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') { $http = HTTP::Tiny->new(timeout => 30, keep_alive => 1); return 1 }
    my $r = $http->get("http://127.0.0.1:PORT/close/$id");
    die "the ticket system answered $r->{status}\n" unless $r->{success};
    return 1;
}
1;
"""


@pytest.mark.both_stores
def test_four_children_close_tickets_in_a_loopback_ticket_system(home: Home, started) -> None:
    # A real ticket system stand-in: a threaded HTTP server on 127.0.0.1 answering in 50 ms,
    # counting how many requests each ticket got and how many were open at once.
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: dict[str, int] = {}
    busy, most = [0], [0]
    lock = threading.Lock()

    class Tickets(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                busy[0] += 1
                most[0] = max(most[0], busy[0])
            threading.Event().wait(0.05)  # (the ticket system's latency)
            with lock:
                busy[0] -= 1
                seen[self.path] = seen.get(self.path, 0) + 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tickets)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wide(home, 4, TICKET_SCRIPT.replace("PORT", str(server.server_address[1])))
        started()
        ids = [f"INC-{n}" for n in range(60)]
        omb(home, "close", "-", stdin="".join(i + "\n" for i in ids))
        wait_for(lambda: len(seen) == len(ids), timeout=60, what="every ticket closed")
        wait_for(lambda: json.loads(omb(home, "deliveries", "list", "--status", "open", "--json").stdout) == [],
                 what="every outcome recorded")
    finally:
        server.shutdown()
    assert seen == {f"/close/{i}": 1 for i in ids}  # each ticket once
    assert most[0] >= 2  # side by side
    closes = [c["closes"] for c in status(home)["ombacksync"]["children"]]
    assert sum(closes) == len(ids) and sum(1 for c in closes if c) >= 2

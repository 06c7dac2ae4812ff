"""Pausing a subscriber (issue 32, item 1): its deliveries are made and kept, claimed by no one, and
run in order once resumed; the command line's answers; status, metrics and the listings say it;
store copy carries it. The event core on a real SQLite file, and on the suite's real PostgreSQL
server for the tests marked both_stores; the supervisor and OMi's HTTP interface for real (two
nodes on PostgreSQL: tests/pg/test_pause_nodes.py)."""

from __future__ import annotations

import getpass
import json
import re
import sqlite3

import pytest
from conftest import run_ombridge as omb
from conftest import status, wait_for
from web_support import XML, change_body, change_path

from bridge import store
from bridge.delivery import backsync
from bridge.eventcore import catalog, deliveries, events, pauses
from bridge.home import Home
from bridge.model import ActionKind, Lane


def close(conn, *ids: str) -> None:
    events.send_many(conn, [("event/update", {"ID": i, "STATE": "closed"}) for i in ids])


def command_subscriber(conn, topic: str = "task/change", sync: bool = False) -> int:
    if topic not in [t["name"] for t in catalog.list_topics(conn)]:
        catalog.add_topic(conn, topic, ["TASK"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    catalog.attach_topic(conn, sid, topic, sync)
    return sid


@pytest.mark.both_stores
def test_a_paused_subscriber_keeps_its_deliveries_and_no_claim_takes_them_until_resumed(home: Home, conn) -> None:
    backsync.ensure_backsync(conn)
    bs = catalog.system_subscriber(conn, ActionKind.BACKSYNC)
    change = pauses.pause(conn, bs, "local user tester on box (command line)")
    assert change.changed and change.paused_by == "local user tester on box (command line)"
    close(conn, "C-1", "C-2", "C-3")  # stored and made while paused
    assert deliveries.claim(conn, limit=10, lane=Lane.BACKSYNC, owner="n") == []
    assert deliveries.next_due(conn, Lane.BACKSYNC) is None  # the idle lane does not spin on them
    assert deliveries.finish_and_claim(conn, [], limit=10, lane=Lane.BACKSYNC, owner="n") == ([], [])
    assert pauses.listing(conn)[0] | {"paused_at": 0} == {
        "id": bs, "action": "backsync", "description": catalog.get_subscriber(conn, bs).description, "paused_at": 0,
        "paused_by": "local user tester on box (command line)", "held": 3}

    again = pauses.pause(conn, bs, "someone else")
    assert not again.changed and again.paused_by == change.paused_by and again.open == 3  # the first pause stays
    resumed = pauses.resume(conn, bs)
    assert resumed.changed and resumed.paused_at is None and pauses.listing(conn) == []
    claimed = deliveries.claim(conn, limit=10, lane=Lane.BACKSYNC, owner="n")
    assert [c.event.key["ID"] for c in claimed] == ["C-1", "C-2", "C-3"]  # in the order sent
    assert not pauses.resume(conn, bs).changed


@pytest.mark.both_stores
def test_one_paused_action_subscriber_holds_only_its_own(home: Home, conn) -> None:
    held, runs = command_subscriber(conn), command_subscriber(conn)
    pauses.pause(conn, held, "me")
    events.send(conn, "task/change", {"TASK": "T-1"})
    events.send(conn, "task/change", {"TASK": "T-2"})
    assert [c.subscriber_id for c in deliveries.claim(conn, limit=10, lane=Lane.ACTIONS, owner="n")] == [runs, runs]
    # what is left due is the held ones, which count for nothing: the next is a lease's end
    assert deliveries.next_due(conn, Lane.ACTIONS) > store.now(conn) + deliveries.LEASE_MARGIN
    pauses.resume(conn, held)
    assert [(c.subscriber_id, c.event.key["TASK"]) for c in deliveries.claim(
        conn, limit=10, lane=Lane.ACTIONS, owner="n")] == [(held, "T-1"), (held, "T-2")]


@pytest.mark.both_stores
def test_a_paused_synchronized_subscriber_is_not_called_by_the_sender_and_waits(home: Home, conn) -> None:
    sid = command_subscriber(conn, sync=True)
    pauses.pause(conn, sid, "me")
    from bridge.delivery.sending import send

    result = send(conn, "task/change", {"TASK": "T-1"})
    assert result.deliveries == 1 and result.synchronized == ()  # stored, not run
    assert deliveries.claim(conn, limit=10, lane=Lane.ACTIONS, owner="n") == []
    pauses.resume(conn, sid)
    assert [c.event.key["TASK"] for c in deliveries.claim(conn, limit=10, lane=Lane.ACTIONS, owner="n")] == ["T-1"]


def test_removing_a_paused_subscriber_takes_its_pause_and_an_unknown_one_is_refused(home: Home, conn) -> None:
    sid = command_subscriber(conn)
    pauses.pause(conn, sid, "me")
    catalog.remove_subscriber(conn, sid)
    assert pauses.paused(conn) == {}
    for args in (("pause", str(sid)), ("resume", str(sid)), ("pause", "0"), ("pause", "x")):
        r = omb(home, "subscriber", *args, check=False)
        assert r.returncode != 0 and r.stdout == "", r
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "no subscriber" in omb(home, "subscriber", "pause", str(sid), check=False).stderr


def test_the_command_line_pauses_and_resumes_says_it_twice_and_writes_the_audit_line(home: Home) -> None:
    listed = json.loads(omb(home, "subscriber", "list", "--json").stdout)
    bs = next(s["id"] for s in listed if s["action"] == "backsync")
    assert next(s for s in listed if s["id"] == bs)["paused_at"] is None
    r = omb(home, "subscriber", "pause", str(bs))
    assert r.stdout.startswith(f"subscriber {bs} (backsync) paused on every node: its deliveries are stored and wait "
                               f"until `ombridge subscriber resume {bs}` (0 open deliveries now)")
    me = f"local user {getpass.getuser()} on "
    again = omb(home, "subscriber", "pause", str(bs))  # exit 0: the wanted state holds
    assert re.fullmatch(rf"subscriber {bs} is already paused since \S+ \S+ by {me}\S+ \(command line\): "
                        r"nothing changed\n", again.stdout), again.stdout
    shown = json.loads(omb(home, "subscriber", "show", str(bs), "--json").stdout)
    assert shown["paused_by"].startswith(me) and shown["paused_at"] > 0
    assert "paused since" in omb(home, "subscriber", "show", str(bs)).stdout
    assert "\tsince " in omb(home, "subscriber", "list").stdout
    omb(home, "close", "C-1")
    assert omb(home, "subscriber", "resume", str(bs)).stdout == (
        f"subscriber {bs} (backsync) resumed: its 1 open delivery run now, oldest first\n")
    assert omb(home, "subscriber", "resume", str(bs)).stdout == f"subscriber {bs} is not paused: nothing changed\n"
    lines = [line for line in (home.log_dir / "ombridge.log").read_text().splitlines() if "ombridge.audit" in line]
    assert len(lines) == 2  # what changed, no more
    assert f"INFO ombridge.audit: {me}" in lines[0] and lines[0].endswith(
        f"(command line): subscriber {bs} (backsync) paused on every node: its deliveries are stored and wait until "
        f"`ombridge subscriber resume {bs}` (0 open deliveries now)")
    assert lines[1].endswith(f"subscriber {bs} (backsync) resumed: its 1 open delivery run now, oldest first")
    assert (home.log_dir.stat().st_mode & 0o777) == 0o700


def test_store_copy_carries_a_pause(home: Home, tmp_path) -> None:
    omb(home, "subscriber", "pause", "1")
    target = tmp_path / "copy.db"
    omb(home, "store", "copy", "--to", f"sqlite:{target}")
    with sqlite3.connect(target) as db:
        rows = db.execute("SELECT subscriber_id, paused_by FROM subscriber_pauses").fetchall()
    assert [r[0] for r in rows] == [1] and rows[0][1].startswith("local user ")


def test_a_paused_backsync_accepts_closes_runs_none_and_runs_them_in_order_once_resumed(home: Home,
                                                                                         listening) -> None:
    out = home.root / "ran.txt"
    witness = omb(home, "subscriber", "add", "--command", f'echo "&ID" >> {out}').stdout.strip()  # the manager works
    omb(home, "subscriber", "topic", "add", witness, "event/update")
    srv = listening()
    omb(home, "subscriber", "pause", "1")
    omb(home, "close", "A-1", "A-2")
    with srv.client() as http:
        assert http.post(change_path("A-3"), content=change_body(), headers=XML).status_code == 200
    wait_for(lambda: out.exists() and sorted(out.read_text().split()) == ["A-1", "A-2", "A-3"],
             timeout=60, what="the witness ran them")
    held = json.loads(omb(home, "deliveries", "list", "--subscriber", "1", "--json").stdout)
    assert [(d["status"], d["attempts"]) for d in held] == [("open", 0)] * 3
    assert not home.output.exists() or " Close " not in home.output.read_text()  # nothing reached OMBackSync

    st = status(home)
    assert st["paused"][0]["id"] == 1 and st["paused"][0]["held"] == 3
    assert st["backlog"] == {"open": 3, "failed": 0}
    assert st["degraded"] == []  # an operator's choice, not a fault
    text = omb(home, "status").stdout
    assert re.search(r"^paused +subscriber 1 \(backsync\), paused since .* by local user .*, holding 3 open; "
                     r"ombridge subscriber resume 1$", text, re.M), text
    metrics = omb(home, "metrics").stdout
    assert 'ombridge_subscriber_paused{subscriber="1",action="backsync"} 1' in metrics
    assert f'ombridge_subscriber_paused{{subscriber="{witness}",action="command"}} 0' in metrics
    assert re.search(r'^ombridge_subscriber_paused_since_seconds\{subscriber="1",action="backsync"\} \d+$', metrics, re.M)
    with srv.client() as http:
        assert 'ombridge_subscriber_paused{subscriber="1",action="backsync"} 1' in http.get("/metrics").text

    omb(home, "subscriber", "resume", "1")
    wait_for(lambda: home.output.exists() and [line.split()[-1] for line in home.output.read_text().splitlines()
                                                if " Close " in line] == ["A-1", "A-2", "A-3"], what="the closes ran")
    omb(home, "restart", "ombacksync")
    log = (home.log_dir / "ombridge.log").read_text()
    assert re.search(rf"ombridge\.audit: local user {re.escape(getpass.getuser())} \(pid \d+\): restart ombacksync: "
                     "done$", log, re.M), log

"""The nodes of one event core (issue 24): joining, heartbeats, a dead node's claims taken over,
status. On a real SQLite file here (the logic is the store's, not the file's); the two-supervisor
tests on a real PostgreSQL server are in tests/pg/."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import run_ombridge as omb
from conftest import status, wait_for
from queue_support import DELIVERIES

from bridge import store
from bridge.errors import BridgeError, UsageError
from bridge.eventcore import nodes
from bridge.home import Home
from bridge.model import Lane

pytestmark = pytest.mark.both_stores

A = nodes.Node("connector-a", "host-a", "/srv/a", 101)
B = nodes.Node("connector-b", "host-b", "/srv/b", 202)


def age(conn, name: str, seconds: float) -> None:
    """Make ``name``'s last heartbeat ``seconds`` older (as if it had stopped beating)."""
    conn.execute("UPDATE nodes SET last_seen = last_seen - ? WHERE name = ?", (seconds, name))


def claimed_by(conn, owner: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {DELIVERIES} WHERE claimed_by = ?", (owner,)).fetchone()[0]


def test_a_name_in_use_by_a_live_node_elsewhere_is_refused(home: Home, conn) -> None:
    nodes.join(conn, A, version="1", checksum="x")
    twin = nodes.Node(A.name, "host-z", "/srv/z", 303)
    with pytest.raises(BridgeError, match="node 'connector-a' already runs on host-a in /srv/a .*give this home a name"):
        nodes.join(conn, twin, version="1", checksum="x")
    nodes.join(conn, nodes.Node(A.name, A.host, A.home, 999), version="1", checksum="x")  # the same home, restarted
    age(conn, A.name, nodes.DEAD_AFTER + 1)
    nodes.join(conn, twin, version="1", checksum="x")  # a dead node's name may be taken over
    assert [(n["name"], n["host"], n["pid"]) for n in nodes.listing(conn)] == [(A.name, "host-z", 303)]


def test_a_dead_nodes_claims_are_made_due_by_the_next_beat_of_another(home: Home, conn) -> None:
    omb(home, "close", "C-1", "C-2", "C-3")
    nodes.join(conn, A, version="1", checksum="same")
    nodes.join(conn, B, version="1", checksum="same")
    from bridge.eventcore import deliveries

    claims = deliveries.claim(conn, limit=3, lane=Lane.BACKSYNC, owner=A.owner)
    assert len(claims) == 3 and claimed_by(conn, A.owner) == 3
    assert nodes.beat(conn, B, "same") == {}  # A is alive: nothing taken
    assert {n["name"]: n["leases"] for n in nodes.listing(conn)} == {A.name: 3, B.name: 0}

    age(conn, A.name, nodes.DEAD_AFTER + 1)
    assert nodes.beat(conn, B, "same") == {A.name: 3}
    assert claimed_by(conn, A.owner) == 0
    assert len(deliveries.claim(conn, limit=3, lane=Lane.BACKSYNC, owner=B.owner)) == 3  # due again at once
    listed = {n["name"]: n for n in nodes.listing(conn)}
    assert listed[A.name]["state"] == "dead" and not listed[A.name]["alive"]
    assert listed[B.name]["state"] == "running" and listed[B.name]["leases"] == 3
    (trouble,) = nodes.troubles(list(listed.values()))
    assert trouble.startswith("node connector-a is dead: no heartbeat for 1")


def test_a_clean_stop_is_no_death_and_different_scripts_degrade(conn) -> None:
    nodes.join(conn, A, version="1", checksum="aaaa")
    nodes.join(conn, B, version="1", checksum="bbbb")
    (trouble,) = nodes.troubles(nodes.listing(conn))
    assert trouble == "the nodes run different OMBackSync.pl: connector-a aaaa, connector-b bbbb"
    nodes.leave(conn, A)
    age(conn, A.name, 3600)
    assert nodes.troubles(nodes.listing(conn)) == []
    assert [n["state"] for n in nodes.listing(conn)] == ["stopped", "running"]


@pytest.mark.parametrize("name", ["a#b", "tab\there", "x" * 201])
def test_a_bad_node_name_in_the_conf_is_one_sentence(home: Home, name: str) -> None:
    (home.root / "conf" / "ombridge.conf").write_text(f"[store]\nnode = {json.dumps(name)}\n")
    with pytest.raises(UsageError, match="a node name is 1 to 200 characters, without '#' or control characters"):
        nodes.this_node(home, store.Store(home))


def test_the_supervisor_is_its_homes_node_and_says_so_in_status(home: Home) -> None:
    (home.root / "conf" / "ombridge.conf").write_text('[store]\nnode = "connector-a"\n')
    omb(home, "start")
    try:
        (node,) = status(home)["nodes"]
        assert node["name"] == "connector-a" and node["state"] == "running"
        assert node["pid"] == status(home)["supervisor"]["pid"]
        loaded = nodes.script_checksum(home.script)
        wait_for(lambda: status(home)["nodes"][0]["script_checksum"] == loaded, what="the loaded script's checksum")
        # issue 28: the script perl loaded, not the file on disk (edited, not yet restarted)
        home.script.write_text(home.script.read_text() + "\n# edited\n")
        time.sleep(nodes.HEARTBEAT_EVERY * 2)  # (two beats: nothing may change; no event to wait for)
        assert status(home)["nodes"][0]["script_checksum"] == loaded
        omb(home, "restart", "ombacksync")
        edited = nodes.script_checksum(home.script)
        wait_for(lambda: status(home)["nodes"][0]["script_checksum"] == edited, what="the new script's checksum")
        omb(home, "close", "N-1")
        wait_for(lambda: status(home)["backlog"]["open"] == 0, what="the Close delivered")
    finally:
        omb(home, "stop", check=False)
    (node,) = json.loads(omb(home, "status", "--json", check=False).stdout)["nodes"]
    assert node["state"] == "stopped"


def test_status_and_the_console_show_every_node_and_a_dead_one_degrades(home: Home, listening, conn) -> None:
    from console_support import login

    srv = listening()
    dead = nodes.Node("<b>connector-b</b>", "host-b", "/srv/b", 202)
    nodes.join(conn, dead, version="0.0.9", checksum=nodes.script_checksum(home.script))
    age(conn, dead.name, 60)
    r = omb(home, "status", check=False)
    assert r.returncode == 1, r.stdout  # degraded
    assert "nodes         <b>connector-b</b>: dead, seen 6" in r.stdout
    assert "degraded      node <b>connector-b</b> is dead: no heartbeat for 6" in r.stdout
    page = login(srv).get("/ui/status").text
    assert 'id="nodes"' in page and "&lt;b&gt;connector-b&lt;/b&gt;" in page and "<b>connector-b" not in page
    assert '<tr class="node-dead">' in page and '<tr class="node-running">' in page


def test_forgetting_a_node_gone_for_good_releases_every_claim_it_names(home: Home, conn) -> None:
    omb(home, "close", "C-1", "C-2", "C-3")
    nodes.join(conn, A, version="1", checksum="same")
    nodes.join(conn, B, version="1", checksum="same")
    from bridge.eventcore import deliveries

    assert len(deliveries.claim(conn, limit=3, lane=Lane.BACKSYNC, owner=A.owner)) == 3
    conn.execute("UPDATE claims SET lease_until = 0 WHERE delivery_id IN "
                 "(SELECT min(delivery_id) FROM claims WHERE owner = ?)", (A.owner,))  # one lease ended
    r = omb(home, "nodes", "forget", A.name, check=False)
    assert r.returncode == 1 and "node 'connector-a' runs on host-a in /srv/a" in r.stderr and "stop it first" in r.stderr
    assert claimed_by(conn, A.owner) == 3  # refused: nothing changed

    age(conn, A.name, nodes.DEAD_AFTER + 1)
    r = omb(home, "nodes", "forget", A.name)
    assert r.stdout.strip() == "node connector-a forgotten; 3 of its claims are due again"
    assert claimed_by(conn, A.owner) == 0 and nodes.audit(conn) == []
    assert [n["name"] for n in json.loads(omb(home, "nodes", "list", "--json").stdout)] == [B.name]
    assert len(deliveries.claim(conn, limit=3, lane=Lane.BACKSYNC, owner=B.owner)) == 3  # due at once

    r = omb(home, "nodes", "forget", A.name, check=False)
    assert r.returncode == 2 and r.stderr.strip() == ("ombridge: error: no node is named 'connector-a' "
                                                      "(`ombridge nodes list` shows them)")


def test_heartbeats_go_by_the_stores_clock_and_a_node_whose_clock_is_off_degrades(conn, store_kind,
                                                                                  monkeypatch) -> None:
    real = nodes.time.time
    nodes.join(conn, A, version="1", checksum="same")
    monkeypatch.setattr(nodes.time, "time", lambda: real() + 3600)  # B's clock: an hour ahead
    nodes.join(conn, B, version="1", checksum="same")
    if store_kind == "sqlite":  # one box: the machine's clock is the store's, nothing to compare
        monkeypatch.undo()
        assert {n["name"]: n["clock_offset"] for n in nodes.listing(conn)} == {A.name: 0.0, B.name: 0.0}
        return
    assert nodes.beat(conn, B, "same") == {}  # A, seen a second ago by the store's clock, is alive
    listed = {n["name"]: n for n in nodes.listing(conn)}
    assert listed[A.name]["state"] == "running"
    assert 3599 < listed[B.name]["clock_offset"] < 3601 and listed[B.name]["state"] == "running"
    assert abs(listed[A.name]["clock_offset"]) < nodes.CLOCK_TOLERANCE
    (trouble,) = nodes.troubles(list(listed.values()))
    assert trouble.startswith("node connector-b's clock is 3600.") and "s ahead of the database's: run NTP" in trouble


def test_a_node_forgotten_while_it_ran_is_listed_again_at_its_next_beat(conn) -> None:
    nodes.join(conn, A, version="1", checksum="same")
    age(conn, A.name, nodes.DEAD_AFTER + 1)  # paused past the limit, still running
    assert nodes.forget(conn, A.name) == 0
    assert nodes.beat(conn, A, "same") == {}
    (listed,) = nodes.listing(conn)
    assert (listed["name"], listed["state"], listed["pid"]) == (A.name, "running", A.pid)


def test_a_node_that_comes_back_to_find_its_name_taken_stops_and_never_writes_the_row(conn) -> None:
    """Issue 28: a node paused past DEAD_AFTER, another home started under its name; both then
    beat one row, status showed one healthy node and a later death waited out the lease."""
    nodes.join(conn, A, version="1", checksum="same")
    age(conn, A.name, nodes.DEAD_AFTER + 2)  # A is paused
    twin = nodes.Node(A.name, "host-z", "/srv/z", A.pid)  # even with the same pid, on another host
    nodes.join(conn, twin, version="1", checksum="same")
    with pytest.raises(nodes.NodeReplaced, match=r"node 'connector-a' was started again on host-z in /srv/z "
                                                 r"\(pid 101\) .*this one stops; give each home a name of its own"):
        nodes.beat(conn, A, "same")
    nodes.leave(conn, A)  # A's clean stop does not mark the twin stopped
    (listed,) = nodes.listing(conn)
    assert (listed["host"], listed["state"]) == ("host-z", "running")
    assert nodes.beat(conn, twin, "same") == {}


def test_check_db_names_orphaned_claims_and_nodes_forget_releases_them(home: Home, conn) -> None:
    """Issue 28: check --db ended with a garbled sentence pointing at SQLite's recovery, and
    nodes forget refused the orphan it reported ("no node is named ...")."""
    from bridge import store
    from bridge.eventcore import deliveries

    omb(home, "close", "C-1", "C-2")
    ghost = nodes.Node("ghost", "gone-host", "/srv/gone", 12)  # never in the table (a copied store, say)
    assert len(deliveries.claim(conn, limit=2, lane=Lane.BACKSYNC, owner=ghost.owner)) == 2
    r = omb(home, "check", "--db", check=False)
    where = store.describe(home)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "2 open claim(s) name node 'ghost', which is not in the nodes table" in r.stderr
    assert r.stderr.splitlines()[-1] == (f"ombridge: error: {where}: claims name nodes that are not in the nodes "
                                         "table: `ombridge nodes forget NAME` makes them due again now")
    r = omb(home, "nodes", "forget", "ghost")
    assert r.stdout.strip() == "node ghost forgotten; 2 of its claims are due again"
    assert claimed_by(conn, ghost.owner) == 0
    assert omb(home, "check", "--db").stdout.strip() == f"{where}: ok"
    nodes.join(conn, A, version="1", checksum="c" * 64)
    header, row = omb(home, "nodes", "list").stdout.splitlines()
    assert header.split() == ["name", "state", "host", "home", "pid", "seen", "leases", "clock", "script"]
    clock, script = row.split()[-2:]
    assert re.fullmatch(r"[+-]\d+\.\ds", clock) and script == "c" * 12, row

"""The supervisor end to end: started and stopped through the CLI in tmp_path, real perl, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE, FIXTURES, OMBRIDGE, alive, status, stop_quietly, wait_for
from conftest import run_ombridge as omb

from bridge.home import Home


def closed_ids(home: Home) -> list[str]:
    if not home.output.exists():
        return []
    return [line.split(" ", 3)[3] for line in home.output.read_text().splitlines() if " Close " in line]


@pytest.fixture
def running(home: Home) -> Iterator[Callable[[], dict]]:
    """Start the supervisor (call the fixture's value to start it); always stopped afterwards."""
    pids: list[int] = []

    def start() -> dict:
        r = omb(home, "start")
        assert "ombridge started" in r.stdout
        st = status(home)
        pids.append(st["supervisor"]["pid"])
        return st

    yield start
    stop_quietly(home, pids)  # (tests/conftest.py also kills and reports whatever is left after it)


def install(home: Home, fixture: str) -> None:
    home.script.write_bytes((FIXTURES / f"{fixture}.pl").read_bytes())


def test_close_reaches_the_script_at_once(home: Home, running) -> None:
    st = running()
    assert st["ombacksync"]["state"] == "running" and st["eventmanager"]["state"] == "running"
    started = time.monotonic()
    omb(home, "close", "EVT-1", "EVT 2 ü")
    wait_for(lambda: closed_ids(home) == ["EVT-1", "EVT 2 ü"], what="closes in OMBSOutput.txt")
    assert time.monotonic() - started < 15  # the doorbell, not the 30 s poll (generous: a busy machine)
    assert status(home)["backlog"] == {"open": 0, "failed": 0}
    lines = home.output.read_text().splitlines()
    assert lines[0].endswith(" Init")


def test_closes_that_went_well_are_logged_as_a_summary_not_per_batch(home: Home, running) -> None:
    running()
    for n in range(20):  # twenty batches, as HTTP closes arrive
        omb(home, "close", f"S-{n}-a", f"S-{n}-b")
        wait_for(lambda: len(closed_ids(home)) == 2 * (n + 1), what="the batch's closes")
    omb(home, "stop")
    log = (home.log_dir / "ombridge.log").read_text()
    assert "closed, 0 failed" not in log  # no line per batch
    summaries = [line for line in log.splitlines() if "backsync: " in line and " closed in " in line]
    assert 1 <= len(summaries) <= 3
    assert sum(int(line.split("backsync: ")[1].split()[0]) for line in summaries) == 40


def test_status_stop_and_start_exit_codes(home: Home, running) -> None:
    r = omb(home, "status", check=False)
    assert r.returncode == 3 and "stopped" in r.stdout
    assert json.loads(omb(home, "status", "--json", check=False).stdout)["supervisor"]["state"] == "stopped"
    assert omb(home, "stop").stdout.strip() == "ombridge is not running"
    st = running()
    assert st["supervisor"]["pid"] > 0
    again = omb(home, "start")
    assert "a supervisor already runs in this home (pid " in again.stderr
    pid = st["supervisor"]["pid"]
    perl = st["ombacksync"]["pid"]
    assert omb(home, "stop").stdout.strip() == f"ombridge stopped (pid {pid})"
    assert not alive(pid) and not alive(perl)
    assert omb(home, "status", check=False).returncode == 3
    assert not (home.run_dir / "control.sock").exists()


def test_control_files_are_owner_only(home: Home, running) -> None:
    running()
    for name in ("control.sock", "doorbell.sock", "ombridge.pid"):
        assert (home.run_dir / name).stat().st_mode & 0o077 == 0, name
    assert home.run_dir.stat().st_mode & 0o077 == 0


def test_syntax_error_stores_an_event_and_closes_wait_for_the_fix(home: Home, running, tmp_path: Path) -> None:
    told = tmp_path / "told.txt"
    omb(home, "topic", "list")  # creates the store
    install(home, "syntax_error")
    st = running()
    assert st["ombacksync"]["state"] == "syntax-error"
    assert "line 6" in st["ombacksync"]["last_error"]
    # the event is stored by the supervisor's main loop, right after the state changed
    wait_for(lambda: json.loads(omb(home, "events", "list", "--topic", "ombacksync/error", "--json").stdout),
             what="the ombacksync/error event")
    errors = json.loads(omb(home, "events", "list", "--topic", "ombacksync/error", "--json").stdout)
    assert len(errors) == 1 and errors[0]["forced"] == 1
    assert errors[0]["key"]["FILE"] == str(home.script) and "line 6" in errors[0]["key"]["MESSAGE"]
    # a subscriber of that topic is told (the Event Manager kept running)
    sid = omb(home, "subscriber", "add", "--command", f"printf '%s' &FILE > {told}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "ombacksync/*")
    omb(home, "close", "WAITING-1")
    omb(home, "restart", "ombacksync", check=False)  # still broken: refused, another error event
    wait_for(lambda: told.exists() and told.read_text() == str(home.script), what="subscriber told")
    deliveries = json.loads(omb(home, "deliveries", "list", "--subscriber", "1", "--json").stdout)
    assert [(d["status"], d["attempts"]) for d in deliveries] == [("open", 0)]  # waiting, not failed
    home.script.write_bytes(EXAMPLE.read_bytes())
    r = omb(home, "restart", "ombacksync")
    assert "ombacksync running" in r.stdout
    wait_for(lambda: closed_ids(home) == ["WAITING-1"], what="the waiting close delivered after the fix")


def test_restart_with_a_broken_script_keeps_the_old_child(home: Home, running) -> None:
    st = running()
    perl = st["ombacksync"]["pid"]
    install(home, "syntax_error")
    r = omb(home, "restart", "ombacksync", check=False)
    assert r.returncode == 1
    assert "the running ombacksync was kept" in r.stderr and f"{home.script} line 6" in r.stderr
    st = status(home)
    assert st["ombacksync"]["state"] == "running" and st["ombacksync"]["pid"] == perl
    omb(home, "close", "STILL-SERVED")
    wait_for(lambda: closed_ids(home) == ["STILL-SERVED"])
    install(home, "stateful")
    omb(home, "restart")
    st = status(home)
    assert st["ombacksync"]["pid"] != perl and st["ombacksync"]["state"] == "running"


def test_a_crashing_child_is_restarted_and_the_rest_delivered(home: Home, running) -> None:
    install(home, "segfault")
    running()
    omb(home, "close", "A", "segv-1", "B")
    wait_for(lambda: status(home)["ombacksync"]["restarts"] >= 1, what="a restart")
    rows = lambda: {d["key"]["ID"]: d for d in json.loads(omb(home, "deliveries", "list", "--json").stdout)}  # noqa: E731
    wait_for(lambda: rows()["A"]["status"] == "done" and rows()["B"]["status"] == "done", what="A and B done")
    crashed = rows()["segv-1"]
    assert crashed["status"] == "open" and "SIGSEGV" in crashed["last_error"]


def test_kill_9_during_a_burst_loses_nothing(home: Home, running) -> None:
    ids = [f"BURST-{n}" for n in range(3000)]
    install(home, "stateful")  # slower than the example: every close appends and reopens a file
    st = running()
    sup, perl = st["supervisor"]["pid"], st["ombacksync"]["pid"]
    omb(home, "close", "-", stdin="\n".join(ids) + "\n")
    wait_for(lambda: (home.tmp / "state.txt").exists(), what="first closes")
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not alive(sup), what="supervisor gone")
    wait_for(lambda: not alive(perl), what="the perl child exiting on its own (no orphan)")
    running()
    wait_for(lambda: status(home)["backlog"]["open"] == 0, timeout=60, what="backlog drained after restart")
    delivered = (home.tmp / "state.txt").read_text().splitlines()
    got = json.loads(omb(home, "deliveries", "list", "--status", "done", "--limit", "100000", "--json").stdout)
    assert len(got) == len(ids)
    assert len(delivered) >= len(ids)  # at least once; a batch in flight at the kill may repeat


HOLD_THE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
print("holding", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    conn.execute("BEGIN IMMEDIATE"); time.sleep(0.04); conn.execute("COMMIT"); time.sleep(0.01)
"""


def test_a_burst_beside_another_writer_delivers_each_close_once(home: Home, running) -> None:
    # Another process holds the write lock four fifths of the time (a big sender, say): the
    # backsync lane records and claims when it can, perl working on meanwhile; nothing lost or
    # repeated.
    ids = [f"BURST-{n}" for n in range(3000)]
    running()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(home.db), "3"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        omb(home, "close", "-", stdin="\n".join(ids) + "\n")
        wait_for(lambda: len(closed_ids(home)) >= len(ids), timeout=60, what="every close delivered")
    finally:
        holder.wait(30)
    assert sorted(closed_ids(home)) == sorted(ids)
    wait_for(lambda: status(home)["backlog"]["open"] == 0, what="every outcome recorded")
    assert home.output.read_text().count(" Close ") == len(ids)


def test_the_supervisor_checkpoints_what_its_lanes_write(home: Home, running) -> None:
    # The lanes' commits never copy the WAL into the database (that would stall perl for tens of
    # milliseconds); a chore of the supervisor does, every second.
    ids = [f"CKPT-{n}" for n in range(3000)]
    running()
    before = home.db.stat().st_size
    omb(home, "close", "-", stdin="\n".join(ids) + "\n")  # (too little for its own commit to checkpoint)
    wait_for(lambda: len(closed_ids(home)) >= len(ids), timeout=60, what="every close delivered")
    wait_for(lambda: home.db.stat().st_size > before, what="the WAL copied into the database")


def test_graceful_stop_finishes_in_flight_and_leaves_the_rest_open(home: Home, running, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    omb(home, "topic", "add", "job/run", "--key", "N")
    sid = omb(home, "subscriber", "add", "--command", f"touch {marks}/&N.start; sleep 3; touch {marks}/&N.end").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "job/run")
    running()
    for n in range(6):
        omb(home, "send", "job/run", json.dumps({"N": n}))
    wait_for(lambda: any(marks.glob("*.start")), what="a delivery in flight")
    omb(home, "stop")
    started = {p.stem for p in marks.glob("*.start")}
    ended = {p.stem for p in marks.glob("*.end")}
    assert started == ended  # every delivery in flight was finished
    rows = json.loads(omb(home, "deliveries", "list", "--json").stdout)
    assert {r["status"] for r in rows} <= {"done", "open"}
    assert sum(r["status"] == "open" for r in rows) == 6 - len(ended) > 0
    assert all(r["attempts"] == 0 for r in rows if r["status"] == "open")


def test_second_stop_stops_at_once(home: Home, running, tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper"
    omb(home, "topic", "add", "job/run", "--key", "N")
    sid = omb(home, "subscriber", "add", "--command", f"echo $$ > {pidfile}; exec sleep 60").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "job/run")
    sup = running()["supervisor"]["pid"]
    omb(home, "send", "job/run", '{"N": 1}')
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the sleeper started")
    sleeper = int(pidfile.read_text())
    first = subprocess.Popen([OMBRIDGE, "--home", str(home.root), "stop"], stdout=subprocess.PIPE, text=True)
    # the first stop has reached the supervisor, which waits for the sleeper
    wait_for(lambda: status(home).get("supervisor", {}).get("state") == "stopping", what="the first stop arrived")
    assert alive(sup)
    started = time.monotonic()
    omb(home, "stop", timeout=20)
    assert time.monotonic() - started < 10
    first.wait(timeout=20)
    wait_for(lambda: not alive(sup) and not alive(sleeper), what="supervisor and action killed")


def test_foreground_supervisor_stops_on_sigterm(home: Home) -> None:
    proc = subprocess.Popen([OMBRIDGE, "--home", str(home.root), "start", "--foreground"],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: omb(home, "status", check=False).returncode == 0, what="supervisor up")
        omb(home, "close", "FG-1")
        wait_for(lambda: closed_ids(home) == ["FG-1"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "supervisor" in proc.stderr.read()


def test_stop_does_not_wait_behind_a_batch_of_slow_closes(home: Home, running) -> None:
    install(home, "slow")
    running()
    omb(home, "close", *[f"SLOW-{n}" for n in range(40)])
    wait_for(lambda: (home.tmp / "slow.txt").exists(), what="the first slow close")
    started = time.monotonic()
    omb(home, "stop")
    assert time.monotonic() - started < 9  # 40 x 0.3 s would be 12 s
    done = (home.tmp / "slow.txt").read_text().splitlines()
    rows = json.loads(omb(home, "deliveries", "list", "--subscriber", "1", "--json").stdout)
    assert sum(r["status"] == "done" for r in rows) == len(done) < 40
    assert all(r["attempts"] == 0 for r in rows if r["status"] == "open")

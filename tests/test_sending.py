"""Storing and delivering are two steps: bridge.eventcore.events stores and hands back the synchronized
deliveries, bridge.delivery.sending (and the supervisor's reporter) make them. Real SQLite in tmp_path,
real commands."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import wait_for
from queue_support import DELIVERIES

from bridge import store
from bridge.daemon.reporter import Reporter
from bridge.delivery import actions, backsync, sending
from bridge.eventcore import catalog, events
from bridge.home import Home
from bridge.model import ActionKind

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)


def subscriber(conn: sqlite3.Connection, pattern: str, command: str, sync: bool = True) -> int:
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, command)
    catalog.attach_topic(conn, sid, pattern, sync)
    return sid


def rows(conn: sqlite3.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute(f"SELECT status, attempts, claimed_by IS NULL FROM {DELIVERIES}")]


def test_events_stores_and_hands_back_the_synchronized_delivery_unmade(conn: sqlite3.Connection,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "sync.txt"
    catalog.add_topic(conn, "task/add", ["TASK"])
    sid = subscriber(conn, "task/add", f"printf '%s' &TASK > {out}")
    result = events.send(conn, "task/add", {"TASK": "T1"})
    assert not out.exists() and result.synchronized == ()
    (pending,) = result.pending
    assert (pending.subscriber_id, pending.event_id) == (sid, result.event_id)
    assert rows(conn) == [("open", 1, 0)]  # claimed by the sender, attempt counted: no one else takes it
    (delivered,) = sending.deliver(conn, [result])
    assert out.read_text() == "T1" and delivered.synchronized == ((sid, "done"),) and delivered.pending == ()
    assert rows(conn) == [("done", 1, 1)]


def test_a_sender_that_cannot_wait_hands_them_to_the_event_manager(conn: sqlite3.Connection) -> None:
    catalog.add_topic(conn, "task/add", ["TASK"])
    subscriber(conn, "task/add", "true")
    subscriber(conn, "task/add", "true", sync=False)
    result = events.send(conn, "task/add", {"TASK": "T1"})
    assert sending.hand_over(conn, [result]) == 1
    assert sorted(rows(conn)) == [("open", 0, 1), ("open", 0, 1)]  # no attempt counted, due now


def test_send_without_a_synchronized_subscriber_imports_no_action(tmp_path: Path, home: Home) -> None:
    # `ombridge send`'s start-up: the actions module loads only when a synchronized call is made
    import subprocess
    import sys

    c = store.connect(home)
    catalog.add_topic(c, "task/add", ["TASK"])
    subscriber(c, "task/add", "true", sync=False)
    c.close()
    probe = ("import sys; from bridge.delivery import sending; from bridge import store; "
             f"sending.send(store.connect({str(home.root)!r}), 'task/add', {{'TASK': 'T'}}); "
             "print('bridge.delivery.actions' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_the_reporter_stores_in_order_and_a_close_ends_a_slow_synchronized_call(home: Home,
                                                                                  conn: sqlite3.Connection) -> None:
    backsync.ensure_backsync(conn)
    started = home.root / "started.txt"
    sid = subscriber(conn, backsync.ERROR_TOPIC, f"printf '%s\\n' &MESSAGE >> {started}; sleep 20")
    reporter = Reporter(home, store.Store(home))
    try:
        before = time.monotonic()
        reporter.report("first")
        reporter.report("second")
        assert time.monotonic() - before < 0.5  # queued, not made
        wait_for(lambda: started.exists() and actions.running_count() == 1, what="the first call running")
        before = time.monotonic()
        assert reporter.close()
        assert time.monotonic() - before < 5  # not the 20 s the subscriber sleeps
    finally:
        reporter.close()
    stored = [e["key"] for e in events.list_events(conn, topic=backsync.ERROR_TOPIC)]
    assert [k.split('"MESSAGE":')[1] for k in reversed(stored)] == ['"first"}', '"second"}']
    assert started.read_text() == "first\n"  # the second was handed over, not made while stopping
    deliveries = conn.execute(f"SELECT attempts, status, claimed_by IS NULL FROM {DELIVERIES} "
                              "WHERE subscriber_id = ? ORDER BY id", (sid,)).fetchall()
    assert [tuple(d) for d in deliveries] == [(1, "open", 1), (0, "open", 1)]  # both left to the manager
    killed = conn.execute("SELECT ok FROM attempts").fetchall()
    assert [tuple(a) for a in killed] == [(0,)]

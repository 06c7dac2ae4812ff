"""``ombacksync/error`` reports through the CLI and a real supervisor: a slow synchronized
subscriber of that topic holds up nothing (issue 21), and a refused restart is reported (issue 22)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, OMBRIDGE, alive, status, wait_for
from conftest import run_ombridge as omb

from bridge.home import Home

SLEEP = 20  # seconds the synchronized subscriber sleeps: far more than any bound asserted below
PROMPT = 6.0  # seconds within which status, stop and a signal must be done (a busy machine: generous)


@pytest.fixture
def started(home: Home) -> Iterator[Callable[..., dict]]:
    """Call to ``ombridge start``; the supervisor is always stopped (or killed) afterwards."""
    pids: list[int] = []

    def start() -> dict:
        assert "ombridge started" in omb(home, "start").stdout
        st = status(home)
        pids.append(st["supervisor"]["pid"])
        return st

    yield start
    if omb(home, "status", check=False).returncode != 3:
        omb(home, "stop", check=False)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def slow_subscriber(home: Home, began: Path, sync: bool = True) -> str:
    """A subscriber of ombacksync/error that notes it began, then sleeps SLEEP seconds."""
    omb(home, "topic", "list")  # creates the event core with the built-in topics
    sid = omb(home, "subscriber", "add", "--command", f"printf '%s\\n' &FILE >> {began}; sleep {SLEEP}",
              "--retries", "3").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "ombacksync/error", *(["--sync"] if sync else []))
    home.script.write_bytes((FIXTURES / "syntax_error.pl").read_bytes())
    return sid


def timed(call: Callable[[], object]) -> float:
    before = time.monotonic()
    call()
    return time.monotonic() - before


def test_a_sleeping_synchronized_subscriber_of_ombacksync_error_delays_neither_status_nor_stop(
        home: Home, started, tmp_path: Path) -> None:
    began = tmp_path / "began.txt"
    sid = slow_subscriber(home, began)
    pid = started()["supervisor"]["pid"]
    wait_for(began.exists, what="the synchronized subscriber called")
    took = timed(lambda: omb(home, "status", check=False))
    assert took < PROMPT, f"status took {took:.1f}s"
    st = status(home)
    assert st["supervisor"]["state"] == "running" and st["ombacksync"]["state"] == "syntax-error"
    took = timed(lambda: omb(home, "stop"))
    assert took < PROMPT, f"stop took {took:.1f}s"
    assert not alive(pid)
    # the call it did not wait for is not lost: recorded as a failed attempt, open for the next start
    rows = json.loads(omb(home, "deliveries", "list", "--subscriber", sid, "--json").stdout)
    assert [(r["status"], r["attempts"]) for r in rows] == [("open", 1)]
    assert began.read_text() == f"{home.script}\n"


def test_a_sleeping_synchronized_subscriber_of_ombacksync_error_does_not_delay_sigterm(
        home: Home, tmp_path: Path) -> None:
    began = tmp_path / "began.txt"
    slow_subscriber(home, began)
    proc = subprocess.Popen([OMBRIDGE, "--home", str(home.root), "start", "--foreground", "--no-stderr-log"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(began.exists, what="the synchronized subscriber called")
        before = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SLEEP + 30) == 0
        took = time.monotonic() - before
        assert took < PROMPT, f"SIGTERM took {took:.1f}s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_refused_restart_stores_an_ombacksync_error_event(home: Home, started, tmp_path: Path) -> None:
    told = tmp_path / "told.txt"
    omb(home, "topic", "list")
    sid = omb(home, "subscriber", "add", "--command", f"printf '%s|%s' &FILE &MESSAGE > {told}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "ombacksync/error")
    perl = started()["ombacksync"]["pid"]
    home.script.write_bytes((FIXTURES / "syntax_error.pl").read_bytes())
    r = omb(home, "restart", "ombacksync", check=False)
    assert r.returncode == 1 and "the running ombacksync was kept" in r.stderr
    wait_for(told.exists, what="the subscriber of ombacksync/error told")
    wait_for(lambda: "line 6" in told.read_text(), what="the whole message written")
    assert told.read_text().startswith(f"{home.script}|")
    errors = json.loads(omb(home, "events", "list", "--topic", "ombacksync/error", "--json").stdout)
    assert len(errors) == 1 and "line 6" in errors[0]["key"]["MESSAGE"]
    st = status(home)  # the old child serves on
    assert st["ombacksync"]["state"] == "running" and st["ombacksync"]["pid"] == perl

"""The perl fault matrix, end to end through a running supervisor.

For each fault: the other events are delivered, the faulty delivery is retried and then failed
with a readable reason, ombacksync recovers, and no perl process outlives the supervisor.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from chaos import perls_of
from conftest import EXAMPLE, FIXTURES, OMBRIDGE, status, wait_for
from conftest import run_ombridge as omb

from bridge.home import Home


def by_id(home: Home) -> dict[str, dict]:
    rows = json.loads(omb(home, "deliveries", "list", "--subscriber", "1", "--json", "--limit", "1000").stdout)
    return {r["key"]["ID"]: r for r in rows}


@pytest.fixture
def faulty(home: Home):
    home.script.write_bytes((FIXTURES / "faulty.pl").read_bytes())
    omb(home, "topic", "list")  # create the store, then make faults fail fast
    omb(home, "close", "warm-up")  # creates the backsync subscriber (id 1)
    omb(home, "subscriber", "set", "1", "--retries", "1", "--timeout", "2")
    omb(home, "start")
    yield home
    omb(home, "stop", check=False)
    wait_for(lambda: not perls_of(home), what="no perl process left behind")


@pytest.mark.parametrize("fault,reason", [
    ("die-1", r"^ticket system refused die-1$"),
    ("exit-1", r"^OMBackSync called exit\(5\)$"),
    ("hang-1", r"^call timed out after 2s$"),
    ("segv-1", r"^perl child \d+ was killed by SIGSEGV$"),
    ("corrupt-1", r"^protocol error: unexpected line b'GARBAGE"),
])
def test_fault_is_retried_then_failed_and_the_rest_delivered(faulty: Home, fault: str, reason: str) -> None:
    import re

    home = faulty
    omb(home, "close", "ok-1", fault, "ok-2", "flood-1", "ok-3")
    wait_for(lambda: by_id(home)[fault]["status"] == "failed", timeout=60, what=f"{fault} failed after its retry")
    rows = by_id(home)
    assert rows[fault]["attempts"] == 2 and re.search(reason, rows[fault]["last_error"]), rows[fault]
    wait_for(lambda: all(by_id(home)[i]["status"] == "done" for i in ("ok-1", "ok-2", "flood-1", "ok-3")),
             what="the other closes delivered")
    ok = (home.tmp / "ok.txt").read_text().splitlines()
    assert {"warm-up", "ok-1", "ok-2", "flood-1", "ok-3"} <= set(ok) and fault not in ok
    wait_for(lambda: status(home)["ombacksync"]["state"] == "running", what="ombacksync recovered")
    omb(home, "close", "after")
    wait_for(lambda: "after" in (home.tmp / "ok.txt").read_text().splitlines(), what="serving after the fault")


def test_init_that_dies_is_retried_forever_and_recovers_by_itself(home: Home) -> None:
    home.script.write_bytes((FIXTURES / "init_dies.pl").read_bytes())
    (home.root / "conf" / "ombridge.conf").write_text("[ombacksync]\nstart_backoff_cap = 1\n")
    omb(home, "start")
    try:
        seen: dict = {}  # (one status read for both checks: the backoff is 1 s, a second read may land after it)
        wait_for(lambda: seen.update(status(home)["ombacksync"]) or (seen["restarts"] == 0 and seen["state"] == "backoff"),
                 timeout=30, what="backoff after a failed start")
        assert "cannot reach the ticket system" in seen["last_error"] and seen["retry_in"] is not None
        # degraded, and says when; the backoff is 1 s, so a look may land while it is starting again
        wait_for(lambda: (r := omb(home, "status", check=False)).returncode == 1 and "next try in" in r.stdout,
                 timeout=30, what="status saying when the next try is")
        errors = json.loads(omb(home, "events", "list", "--topic", "ombacksync/error", "--json").stdout)
        assert errors and "cannot reach the ticket system" in errors[0]["key"]["MESSAGE"]
        omb(home, "close", "C-1")
        wait_for(lambda: status(home)["ombacksync"]["state"] == "backoff", what="still failing")
        assert by_id(home)["C-1"]["status"] == "open"
        home.script.write_bytes(EXAMPLE.read_bytes())  # the ticket system is back: no restart needed
        wait_for(lambda: by_id(home)["C-1"]["status"] == "done", timeout=30, what="the waiting close delivered")
        assert len(json.loads(omb(home, "events", "list", "--topic", "ombacksync/error", "--json").stdout)) == 1
    finally:
        omb(home, "stop", check=False)
    wait_for(lambda: not perls_of(home), what="no perl process left behind")


def test_script_deleted_while_running(faulty: Home) -> None:
    home = faulty
    original = home.script.read_bytes()
    home.script.unlink()
    omb(home, "close", "still-1")  # the loaded script keeps serving
    wait_for(lambda: by_id(home)["still-1"]["status"] == "done")
    omb(home, "close", "segv-2", "waits-1")  # a crash: the restart finds no script
    wait_for(lambda: status(home)["ombacksync"]["state"] == "syntax-error", what="stopped for want of a script")
    assert "no script at" in status(home)["ombacksync"]["last_error"]
    assert by_id(home)["waits-1"]["status"] == "open"
    home.script.write_bytes(original)
    omb(home, "restart", "ombacksync")
    wait_for(lambda: by_id(home)["waits-1"]["status"] == "done", what="delivered after the script is back")


def test_script_made_unreadable_while_running(faulty: Home) -> None:
    home = faulty
    if os.geteuid() == 0:
        # Root reads any file: the supervisor (and its perl) run as a root without that power,
        # dropped from the capability bounding set, so that a file of mode 0 is unreadable to them.
        omb(home, "stop")
        subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", OMBRIDGE, "--home",
                        str(home.root), "start"], check=True, capture_output=True, timeout=120)
    os.chmod(home.script, 0)
    omb(home, "close", "segv-3")
    wait_for(lambda: status(home)["ombacksync"]["state"] == "syntax-error")
    assert "Permission denied" in status(home)["ombacksync"]["last_error"]
    os.chmod(home.script, 0o600)
    omb(home, "restart", "ombacksync")
    # (segv-3 has a retry left: it may crash the new child once more, which is then started again)
    wait_for(lambda: status(home)["ombacksync"]["state"] == "running", what="the readable script running")

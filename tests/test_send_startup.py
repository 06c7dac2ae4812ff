"""Issue 22, item 6: ``ombridge send`` starts light. Its fast path (bridge/entry.py) imports no
CLI framework, no logging or subprocess machinery, and without a running supervisor not even the
socket extension the doorbell needs (bench/bench_events.py measures the time: <= 2x
``python -c "import sqlite3"``). The collector is off while the fast path imports and is handed
what they made as frozen (gc.freeze), then on again for the rest of the command, on every path."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import run_ombridge as omb

from bridge.home import Home

HEAVY = {"_socket", "socket", "click", "rich", "rich_click", "sqlite_utils", "logging", "subprocess",
         "threading", "pathlib", "dataclasses", "typing", "inspect", "email", "urllib", "asyncio", "uuid"}
# Runs `ombridge ARGS` in-process as the console script does, then reports on stderr what it
# imported and the collector's state: {"modules": [...], "enabled": bool, "frozen": int}.
PROBE = """import gc, json, sys
sys.argv = ["ombridge", *sys.argv[1:]]
from bridge.entry import main
try:
    main()
finally:
    sys.stderr.write(json.dumps({"modules": sorted(sys.modules), "enabled": gc.isenabled(),
                                 "frozen": gc.get_freeze_count()}))
"""


def probe(*args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    return r, json.loads(r.stderr[r.stderr.rindex("{\"modules\""):])


def _subscribed(home: Home) -> None:
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")


def test_send_without_a_supervisor_imports_nothing_heavy(home: Home) -> None:
    _subscribed(home)
    r, seen = probe("--home", str(home.root), "send", "task/change", '{"TASK": "T-1"}')
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().isdigit()  # the event id: the send went through the fast path
    assert set(seen["modules"]) & HEAVY == set()
    deliveries = json.loads(omb(home, "deliveries", "list", "--json").stdout)
    assert [d["status"] for d in deliveries] == ["open"]


def test_the_fast_paths_freeze_their_imports_and_leave_the_collector_on(home: Home) -> None:
    _subscribed(home)
    for args in (("send", "task/change", '{"TASK": "T-1"}'), ("key", "get", '{"TASK": "T-1"}', "TASK")):
        r, seen = probe("--home", str(home.root), *args)
        assert r.returncode == 0, r.stderr
        assert "click" not in seen["modules"], args  # (the fast path, not the full CLI)
        # Frozen: the modules the fast path imported (thousands of objects), not walked again.
        assert seen["enabled"] is True and seen["frozen"] > 1000, (args, seen["enabled"], seen["frozen"])


def test_the_full_command_line_runs_with_the_collector_on(home: Home) -> None:
    _subscribed(home)
    r, seen = probe("--home", str(home.root), "topic", "list")
    assert r.returncode == 0, r.stderr
    assert "task/change" in r.stdout and "click" in seen["modules"]
    assert seen["enabled"] is True and seen["frozen"] == 0


def test_a_refused_send_leaves_the_collector_on(home: Home) -> None:
    _subscribed(home)
    r, seen = probe("--home", str(home.root), "send", "task/change", '{"NOPE": 1}')
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("ombridge: error: ") and seen["enabled"] is True


def test_the_command_imports_nothing_before_main(home: Home) -> None:
    # The installed `ombridge` is bin/ombridge, not the wrapper pip generates for an entry point,
    # which imports `re` (and `enum`) before main can turn the collector off for the imports.
    r = omb(home, "key", "get", '{"TASK": "T-1"}', "TASK", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.stdout == "T-1\n"
    imported = [line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "re" in imported and imported.index("bridge.entry") < imported.index("re"), imported

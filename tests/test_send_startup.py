"""Issue 22, item 6: ``ombridge send`` starts light. Its fast path (bridge/entry.py) imports no
CLI framework, no logging or subprocess machinery, and without a running supervisor not even the
socket extension the doorbell needs (bench/bench_events.py measures the time: <= 2x
``python -c "import sqlite3"``)."""

from __future__ import annotations

import json
import subprocess
import sys

from bridge.home import Home
from conftest import run_ombridge as omb

HEAVY = {"_socket", "socket", "click", "rich", "rich_click", "sqlite_utils", "logging", "subprocess",
         "threading", "pathlib", "dataclasses", "typing", "inspect", "email", "urllib", "asyncio", "uuid"}
PROBE = """import sys
sys.argv = ["ombridge", "--home", sys.argv[1], "send", "task/change", '{"TASK": "T-1"}']
from bridge.entry import main
try:
    main()
finally:
    sys.stderr.write(repr(sorted(sys.modules)))
"""


def test_send_without_a_supervisor_imports_nothing_heavy(home: Home) -> None:
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change")
    r = subprocess.run([sys.executable, "-c", PROBE, str(home.root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().isdigit()  # the event id: the send went through the fast path
    imported = set(eval(r.stderr))  # noqa: S307 - our own probe's repr of a list of names
    assert imported & HEAVY == set()
    deliveries = json.loads(omb(home, "deliveries", "list", "--json").stdout)
    assert [d["status"] for d in deliveries] == ["open"]

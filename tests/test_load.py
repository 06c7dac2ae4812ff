"""Load: producer processes sending concurrently while the Event Manager delivers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OMBRIDGE, ROOT, wait_for
from conftest import run_ombridge as omb

from bridge.home import Home

PRODUCER = """
import sys
sys.path.insert(0, {root!r})
from bridge.eventcore import events
from bridge import store
from bridge.client.control import ring
from bridge.home import Home
home = Home({home!r})
conn = store.connect(home)
for n in range({count}):
    events.send(conn, "load/test", {{"P": {p}, "N": n}}, on_stored=lambda: ring(home.root))
"""


def run_load(home: Home, tmp_path: Path, producers: int, count: int, cli_sends: int) -> None:
    out = tmp_path / "delivered.txt"
    omb(home, "topic", "add", "load/test", "--key", "P", "--key", "N")
    sid = omb(home, "subscriber", "add", "--command", f"echo &P-&N >> {out}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "load/*")
    omb(home, "start", "--workers", "2")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", PRODUCER.format(root=str(ROOT), home=str(home.root),
                                                                        count=count, p=p)],
                                  stderr=subprocess.PIPE, text=True) for p in range(producers)]
        cli = [subprocess.run([OMBRIDGE, "--home", str(home.root), "send", "load/test",
                               json.dumps({"P": "cli", "N": n})], capture_output=True, text=True, timeout=60)
               for n in range(cli_sends)]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * producers, errors
        assert all(r.returncode == 0 for r in cli), [r.stderr for r in cli if r.returncode]
        assert not any("locked" in e for e in errors + [r.stderr for r in cli])
        total = producers * count + cli_sends
        wait_for(lambda: out.exists() and len(set(out.read_text().splitlines())) == total, timeout=300,
                 what=f"all {total} deliveries")
        got = set(out.read_text().splitlines())
        assert got == {f"{p}-{n}" for p in range(producers) for n in range(count)} | {f"cli-{n}" for n in range(cli_sends)}
    finally:
        omb(home, "stop")


def test_four_producers_while_delivering(home: Home, tmp_path: Path) -> None:
    started = time.monotonic()
    run_load(home, tmp_path, producers=4, count=250, cli_sends=20)
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_four_producers_soak(home: Home, tmp_path: Path) -> None:
    run_load(home, tmp_path, producers=4, count=5000, cli_sends=100)

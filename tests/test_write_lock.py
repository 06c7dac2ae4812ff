"""SQLite writers of several processes queue on the event core's write lock (an flock of
``ombridge.db.writer``, bridge/store/sqlitestore.py) before SQLite's own: real processes, a real file."""

from __future__ import annotations

import stat
import subprocess
import sys
import time

import pytest

from bridge import store
from bridge.home import Home

pytestmark = pytest.mark.sqlite_only

HOLDER = """
import sys, time
from bridge import store
conn = store.connect(sys.argv[1])
with store.transaction(conn):
    conn.execute("INSERT INTO topics (name, description, key_fields, created_at) VALUES ('held/by/child', '', '[]', 0)")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def _holder(home: Home, seconds: float) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(home.root), str(seconds)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_writer_of_another_process_is_queued_for_and_handed_the_lock(home: Home) -> None:
    conn = store.connect(home)
    child = _holder(home, 0.6)
    try:
        with pytest.raises(store.Busy):  # not now: another process writes
            with store.transaction(conn, wait=False):
                pass
        started = time.monotonic()
        with store.transaction(conn):  # queued: handed the lock when the child commits
            waited = time.monotonic() - started
            assert conn.execute("SELECT count(*) FROM topics WHERE name = 'held/by/child'").fetchone()[0] == 1
        assert 0.3 < waited < 5
    finally:
        child.wait(10)
    writer = home.db.with_name(home.db.name + ".writer")
    assert stat.S_IMODE(writer.stat().st_mode) == 0o600


def test_nested_holds_keep_the_lock_until_the_last_is_released(home: Home) -> None:
    conn = store.connect(home)
    lock = conn.write_lock
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('free')\n"
             "except BlockingIOError:\n    print('held')\n")
    writer = str(home.db) + ".writer"

    def seen() -> str:
        return subprocess.run([sys.executable, "-c", probe, writer], capture_output=True, text=True).stdout.strip()

    assert lock.acquire() and lock.acquire()
    lock.release()
    assert seen() == "held"
    lock.release()
    assert seen() == "free"

"""Where an HTTP close's time goes, by stage (issue 33): py-spy samples the supervisor and its
listener processes while 16 clients send durable ``event_change`` closes (bench_web's load), and
the samples are put into stages by the frames on their stacks.

Not in ``make bench`` (it needs py-spy, ``pip install py-spy``, and ptrace rights): run it by hand,
``.venv/bin/python bench/profile_http.py [PROCESSES]`` (default 2; 0: the listener inside the
supervisor). Prints the table kept in docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import threading

from bench_web import CLIENTS, PASSWORD, USER, _closes, _load
from common import bench_home, table

from bridge import store
from bridge.client import launcher
from bridge.web import users

RATE = 250  # samples per second and process
SECONDS = 8
# A sample's stage: the first of these found on its stack, from the innermost frame out
# (the order settles a frame that is in two: a COMMIT inside the committer is "store").
STAGES = [
    ("XML parse", ("omi.py:parse", "omi.py:_parse", "xml.etree", "omi.py:change_from", "omi.py:read_change")),
    ("store: BEGIN/COMMIT", ("__init__.py:__enter__", "__init__.py:__exit__")),
    ("store: events and their deliveries", ("events.py:", "forwarded.py:", "omimap.py:", "deliveries.py:enqueue")),
    ("claim", ("deliveries.py:claim", "deliveries.py:_claim", "deliveries.py:_held", "deliveries.py:next_due",
               "deliveries.py:_claims", "actionlanes.py:")),
    ("record", ("deliveries.py:_finish", "deliveries.py:finish", "deliveries.py:_record", "deliveries.py:_where")),
    ("perl (the protocol, the children's output)", ("perlhost.py:", "perlchild.py:", "perlpool.py:", "protocol.py:",
                                                    "scriptlog.py:")),
    ("HTTP (uvicorn, httptools, auth, the answer)", ("uvicorn", "httptools", "starlette", "auth.py:", "app.py:",
                                                    "asyncio", "listener.py:", "selectors.py:")),
    ("waking and the doorbell", ("doorbell.py:", "manager.py:wake", "supervisor.py:")),
    ("pipes and status", ("pipes.py:", "workers.py:", "worker.py:")),
]
IDLE = ("threading.py:wait", "select", "epoll", "poll", "queue.py:get", "_worker (concurrent", "lock.acquire",
        "sleep")


def _stage(stack: str) -> str:
    frames = stack.split(";")
    inner = frames[-1]
    if any(mark in inner for mark in IDLE):
        return "idle (waiting)"
    for frame in reversed(frames):
        for name, marks in STAGES:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def _record(pid: int, out: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", str(RATE), "-d", str(SECONDS), "-f", "raw",
                             "-o", out, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(processes: int) -> dict[str, collections.Counter[str]]:
    """Samples per stage, for the supervisor and (together) its listener processes."""
    counts: dict[str, collections.Counter[str]] = {}
    with bench_home() as home, tempfile.TemporaryDirectory() as tmp:
        conn = store.connect(home)
        users.add_user(conn, USER, PASSWORD)
        conn.close()
        st = launcher.spawn(home, ["--listen", "127.0.0.1:0", "--listen-processes", str(processes)])
        port, pid = st["listener"]["port"], st["supervisor"]["pid"]
        workers = st["listener"].get("pids", [])
        try:
            asyncio.run(_load(port, _closes(50, "WARM")))
            load = threading.Thread(target=lambda: asyncio.run(_load(port, _closes(4000, "PROF"))), daemon=True)
            load.start()
            spies = {f"supervisor-{pid}": _record(pid, os.path.join(tmp, "s.txt"))}
            for n, w in enumerate(workers):
                spies[f"listener-{w}"] = _record(w, os.path.join(tmp, f"w{n}.txt"))
            for spy in spies.values():
                spy.wait()
        finally:
            launcher.stop(home)
        for name in ("s.txt", *(f"w{n}.txt" for n in range(len(workers)))):
            who = "supervisor" if name == "s.txt" else "listener processes"
            counter = counts.setdefault(who, collections.Counter())
            for line in open(os.path.join(tmp, name)):
                stack, _, n = line.rstrip("\n").rpartition(" ")
                counter[_stage(stack)] += int(n)
    return counts


def main() -> None:
    processes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    counts = profile(processes)
    rows = []
    for who, counter in counts.items():
        busy = sum(n for stage, n in counter.items() if stage != "idle (waiting)")
        for stage, n in counter.most_common():
            if stage != "idle (waiting)":
                rows.append([who, stage, f"{100 * n / busy:.0f} %", f"{n / (RATE * SECONDS):.2f}"])
    print(table(f"Where an HTTP close's time goes: {processes} listener processes, {CLIENTS} clients",
                ["process", "stage", "share of its busy samples", "cores busy (thread-samples / s / rate)"], rows))


if __name__ == "__main__":
    main()

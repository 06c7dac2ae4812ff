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

RATE = 200  # samples per second and process
SECONDS = 6
PER_CLIENT = 1000  # closes per client: the load outlasts the samples
# A sample's stage: the innermost frame of its stack that one of these names (file, or function
# in a file); py-spy samples only threads that are running, so idle threads add nothing.
STAGES = [
    ("store: BEGIN/COMMIT (and the write lock)", ("transaction.__enter__ (bridge/store/", "transaction.__exit__ (bridge/store/",
                                                  "WriteLock.")),
    ("XML parse", ("bridge/web/omi.py", "xml/etree")),
    ("claim", ("claim (bridge/eventcore/deliveries.py", "_claim (bridge/eventcore/deliveries.py", "_claims (bridge/eventcore",
               "_held (bridge/eventcore", "next_due (bridge/eventcore", "_of_lane (bridge/eventcore", "Shares.")),
    ("record", ("_finish (bridge/eventcore", "finish (bridge/eventcore", "finish_and_claim (bridge/eventcore",
                "_record_attempts (bridge/eventcore", "settle (bridge/eventcore")),
    ("store: events, deliveries, OMi ids", ("bridge/eventcore/", "bridge/web/forwarded.py", "bridge/web/committer.py",
                                            "bridge/delivery/sending.py")),
    ("perl: the protocol, the stream, the children's output", ("bridge/ombacksync/", "bridge/delivery/lanes.py")),
    ("HTTP: uvicorn, httptools, auth, routes, the answer", ("uvicorn/", "httptools", "starlette/", "asyncio/",
                                                            "bridge/web/auth.py", "bridge/web/app.py",
                                                            "bridge/web/listener.py", "selectors.py")),
    ("pipes: the listener processes and the supervisor", ("bridge/web/pipes.py", "bridge/web/workers.py",
                                                         "bridge/web/worker.py", "json/")),
    ("the doorbell, waking, the main loop", ("bridge/doorbell.py", "bridge/daemon/", "bridge/delivery/manager.py")),
]


WAITING = {"WriteLock._lock_file": "waiting: for the write lock (flock)"}
IDLE = ("Condition.wait", "Event.wait", "EpollSelector.select", "SelectSelector.select", "Queue.get", "sleep",
        "BaseEventLoop.select", "_worker ")


def _stage(stack: str) -> str:
    frames = stack.split(";")
    inner = frames[-1].split(" (")[0]
    if inner in WAITING:
        return WAITING[inner]
    if inner.startswith(IDLE) or inner in ("select", "poll", "epoll"):
        return "waiting: idle (a condition, select, a queue)"
    for frame in reversed(frames):
        for name, marks in STAGES:
            if any(mark in frame for mark in marks):
                return name
    return "other (threading, logging, ...)"


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
            load = threading.Thread(target=lambda: asyncio.run(_load(port, _closes(PER_CLIENT, "PROF"))))
            load.start()
            spies = [_record(pid, os.path.join(tmp, "s.txt"))]
            spies += [_record(w, os.path.join(tmp, f"w{n}.txt")) for n, w in enumerate(workers)]
            for spy in spies:
                spy.wait()
            load.join()
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
        busy = sum(n for stage, n in counter.items() if not stage.startswith("waiting"))
        rows.append([who, "**running, all stages**", "100 %", f"{busy / (RATE * SECONDS):.2f}"])
        for stage, n in sorted(counter.items(), key=lambda kv: (kv[0].startswith("waiting"), -kv[1])):
            share = "" if stage.startswith("waiting") else f"{100 * n / busy:.0f} %"
            rows.append([who, stage, share, f"{n / (RATE * SECONDS):.2f}"])
    print(table(f"Where an HTTP close's time goes: {processes} listener processes, {CLIENTS} clients",
                ["process", "stage", "share of its running samples", "threads (samples / s / rate)"], rows))


if __name__ == "__main__":
    main()

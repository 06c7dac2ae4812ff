"""Event core figures, measured side by side in one run (issue 3 targets):

- send throughput: single durable sends (one transaction each) and the batch API;
- matching with 10 vs 10,000 subscriber topics that cannot match (target <= 1.5x);
- `ombridge send` wall time vs `python -c "import sqlite3"` in the same venv (target <= 2x);
- command-action dispatch vs a raw `subprocess.run` of the same command (target >= 0.8x).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import bench_home, table, timed

from bridge import store
from bridge.delivery import actions
from bridge.eventcore import catalog, events
from bridge.model import ActionKind

SENDS = 2_000
BATCH = 20_000
MATCH_SENDS = 2_000
CLI_RUNS = 30
DISPATCHES = 300


def _median_wall(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _core(home):
    conn = store.connect(home)
    catalog.add_topic(conn, "task/change", ["APPC", "TASK"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    catalog.attach_topic(conn, sid, "task/*")
    catalog.add_filter(conn, sid, "task/*", "APPC", "KE.*")
    return conn


def run() -> str:
    rows = []
    with bench_home() as home:
        conn = _core(home)
        single = timed(lambda: [events.send(conn, "task/change", {"APPC": "KE1", "TASK": f"T{i}"})
                                for i in range(SENDS)])
        batch = timed(lambda: events.send_many(conn, [("task/change", {"APPC": "KE1", "TASK": f"B{i}"})
                                                      for i in range(BATCH)]))
        rows.append(["send, one durable transaction each (synchronous=FULL)", f"{SENDS / single:,.0f} events/s", ""])
        rows.append([f"send_many, {BATCH:,} in one transaction", f"{BATCH / batch:,.0f} events/s",
                     f"{(BATCH / batch) / (SENDS / single):.0f}x single"])

        def per_send(n_other: int) -> float:
            with bench_home() as h:
                c = _core(h)
                other = catalog.add_subscriber(c, ActionKind.COMMAND, "true")
                for i in range(n_other):
                    name = f"other{i}/change"
                    catalog.add_topic(c, name, [])
                    c.execute("INSERT INTO subscriber_topics (subscriber_id, pattern, synchronized) VALUES (?, ?, 0)",
                              (other, name if i % 2 else f"other{i}/*"))
                key = {"APPC": "KE1", "TASK": "M"}
                assert len(events.match(c, "task/change", key)) == 1
                return timed(lambda: [events.match(c, "task/change", key) for _ in range(MATCH_SENDS)]) / MATCH_SENDS

        few, many = per_send(10), per_send(10_000)
        rows.append(["matching (validate, look up, filter): 10,000 vs 10 subscriber topics that cannot match",
                     f"{few * 1e6:.0f} µs vs {many * 1e6:.0f} µs per event", f"{many / few:.2f}x (target <= 1.5)"])

        ombridge = str(Path(sys.executable).parent / "ombridge")
        send_s = _median_wall([ombridge, "--home", str(home.root), "send", "task/change",
                               '{"APPC": "KE1", "TASK": "CLI"}'], CLI_RUNS)
        python_s = _median_wall([sys.executable, "-c", "import sqlite3"], CLI_RUNS)
        rows.append(["`ombridge send` vs `python -c \"import sqlite3\"` (median wall)",
                     f"{send_s * 1e3:.1f} ms vs {python_s * 1e3:.1f} ms", f"{send_s / python_s:.2f}x (target <= 2)"])

        event = actions.EventContext(1, "task/change", {"APPC": "KE1", "TASK": "T 1"}, "{}", 0)
        command = "printf '%s' &TASK > /dev/null"
        ours = timed(lambda: [actions.perform("command", command, event, 30) for _ in range(DISPATCHES)])
        env = actions.environment(event)
        raw = timed(lambda: [subprocess.run(["/bin/sh", "-c", "printf '%s' \"$OMB_V_TASK\" > /dev/null"], env=env,
                                            capture_output=True) for _ in range(DISPATCHES)])
        rows.append(["command action vs raw `subprocess.run` of the same command",
                     f"{DISPATCHES / ours:,.0f}/s vs {DISPATCHES / raw:,.0f}/s", f"{raw / ours:.2f}x (target >= 0.8)"])
    return table("Event core", ["what", "measured", "ratio"], rows)


if __name__ == "__main__":
    print(run())

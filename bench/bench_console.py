"""The console's pages as the event core grows (issue 32): the status page, the chart and the
deliveries filtered by subscriber, each timed against an unchanging control page (the topics,
which reads nothing of the queue) in the same loop, through a real supervisor's listener, logged
in, on a store holding no delivery, 1,000 (every list a full page) and 100,000 (mostly done,
some failed, a few open and waiting in backoff, every one with an attempt). A page that stays
flat costs the same ratio at 1,000 and at 100,000 (at 0 the lists are empty, so they cost less
to draw, not to find).

The rows are stored with the library's own ``send_many`` (events and deliveries as a sender
makes them), then finished in one statement each: the bench measures reading, not delivering.
"""

from __future__ import annotations

import statistics
import time

import httpx
from common import bench_home, table

from bridge import store
from bridge.client import launcher
from bridge.eventcore import catalog, events
from bridge.model import ActionKind
from bridge.web import users

SIZES = (0, 1_000, 100_000)  # none; a full page of each list; a hundred times more
ROUNDS = 60  # loads of each page per size, interleaved with the control page
BATCH = 5_000
HISTORY = 10 * 86400.0  # seconds the finished deliveries are spread over
USER, PASSWORD = "bench", "bench-password-1"
PAGES = {
    "status page": "/ui/status",
    "chart (last hour, SVG)": "/ui/status/chart.svg",
    "deliveries of one subscriber": "/ui/deliveries?subscriber={sid}",
    "deliveries of one subscriber, failed": "/ui/deliveries?subscriber={sid}&status=failed",
    "deliveries, second page (older)": "/ui/deliveries?before={middle}",
}
CONTROL = "/ui/topics"


def _fill(conn: store.Connection, count: int) -> tuple[int, int]:
    """Two subscribers on one topic and ``count`` deliveries in all; (a subscriber's id, a
    delivery id in the middle)."""
    catalog.add_topic(conn, "bench/page", ["N"])
    sids = [catalog.add_subscriber(conn, ActionKind.COMMAND, "true", description=f"bench {n}") for n in (1, 2)]
    for sid in sids:
        catalog.attach_topic(conn, sid, "bench/page")
    for start in range(0, count // 2, BATCH):
        events.send_many(conn, [("bench/page", {"N": n}) for n in range(start, min(start + BATCH, count // 2))])
    now = time.time()
    with store.transaction(conn):
        # ten days of history, evenly: done, one in 50 failed, the newest 200 open in backoff (never due here)
        conn.execute("UPDATE subscriber_events SET status = CASE WHEN id % 50 = 0 THEN 'failed' ELSE 'done' END, "
                     "attempts = 1, next_attempt_at = ? - ? * (? - id) / ?, updated_at = ? "
                     "WHERE id <= ?", (now, HISTORY, count, max(count, 1), now, count - 200))
        conn.execute("UPDATE subscriber_events SET created_at = next_attempt_at - 1 WHERE status != 'open'")
        conn.execute("UPDATE subscriber_events SET next_attempt_at = ? WHERE status = 'open'", (now + 86400,))
        conn.execute("UPDATE events SET created_at = (SELECT min(created_at) FROM subscriber_events se "
                     "WHERE se.event_id = events.id)")
        conn.execute("INSERT INTO attempts (subscriber_event_id, number, started_at, ended_at, ok, exit_status) "
                     "SELECT id, 1, next_attempt_at - 0.01, next_attempt_at, CASE WHEN status = 'done' THEN 1 ELSE 0 "
                     "END, CASE WHEN status = 'done' THEN 0 ELSE 1 END FROM subscriber_events WHERE status != 'open' "
                     "ORDER BY id")
    return sids[0], count // 2


def _login(client: httpx.Client) -> None:
    page = client.get("/ui/login")
    token = page.text.split('name="token" value="', 1)[1].split('"', 1)[0]
    r = client.post("/ui/login", data={"token": token, "user": USER, "password": PASSWORD, "next": "/ui/status"})
    assert r.status_code == 303, r.text


def _ms(client: httpx.Client, path: str) -> float:
    t = time.perf_counter()
    r = client.get(path)
    elapsed = (time.perf_counter() - t) * 1e3
    assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return elapsed


def measure(count: int) -> dict[str, tuple[float, float]]:
    """{page: (median ms, median ÷ the control page's median)} at ``count`` deliveries."""
    with bench_home() as home:
        conn = store.connect(home)
        users.add_user(conn, USER, PASSWORD)
        sid, middle = _fill(conn, count)
        conn.close()
        st = launcher.spawn(home, ["--listen", "127.0.0.1:0"])
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{st['listener']['port']}", timeout=60) as client:
                _login(client)
                paths = {name: p.format(sid=sid, middle=middle) for name, p in PAGES.items()}
                samples: dict[str, list[float]] = {name: [] for name in [CONTROL, *paths]}
                for path in [CONTROL, *paths.values()]:
                    _ms(client, path)  # warm up: templates compiled, caches filled
                for _ in range(ROUNDS):
                    for name, path in [(CONTROL, CONTROL), *paths.items()]:
                        samples[name].append(_ms(client, path))
        finally:
            launcher.stop(home)
    control = statistics.median(samples[CONTROL])
    return {name: (statistics.median(s), statistics.median(s) / control) for name, s in samples.items()}


def run() -> str:
    """The table for `make bench`."""
    by_size = {count: measure(count) for count in SIZES}
    rows = []
    for name in [CONTROL, *PAGES]:
        cells = [f"{by_size[c][name][0]:.1f} ms ({by_size[c][name][1]:.2f}×)" for c in SIZES]
        growth = by_size[SIZES[-1]][name][1] / by_size[SIZES[1]][name][1]
        rows.append([name if name != CONTROL else f"control: the topics page `{CONTROL}`", *cells, f"{growth:.2f}"])
    heads = ["page (SQLite, logged in, median)", *(f"{c:,} deliveries (÷ control)" for c in SIZES),
             "growth 1,000 -> 100,000"]
    return table("Console pages as the event core grows", heads, rows)


if __name__ == "__main__":
    print(run())

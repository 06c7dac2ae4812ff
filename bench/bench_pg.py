"""The event core on PostgreSQL (issue 24), side by side with SQLite in one run, on a throw-away
PostgreSQL server started here (tests/pg_support.py: 127.0.0.1, with production's fsync,
synchronous_commit and full_page_writes on, unlike the tests' throw-away servers):

- a burst of 100,000 closes, `ombridge close -` to the last OMBSOutput.txt line, on SQLite and on
  PostgreSQL, alternated (target: PostgreSQL >= 0.5x SQLite);
- two nodes against one on the same database, the same burst (closes/s, both nodes' output);
- failover: from a node's kill -9 to the first of its leased Closes re-run on the survivor
  (target <= the lease + 5 s; the lease of a Close is its timeout + 30 s);
- `send` returned -> action started on PostgreSQL, p50 and p99 (target p50 <= 10 ms);
- a console page, logged in, on SQLite and on PostgreSQL (p50);
- the `ombridge send` command (a process each time) on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from bench_supervisor import BURST, OMBRIDGE, _burst, _latency
from common import bench_home, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_support import PgServer  # noqa: E402

from bridge import store  # noqa: E402
from bridge.client import launcher
from bridge.delivery import backsync
from bridge.eventcore import nodes

ROUNDS = 3  # bursts per store, alternated (this machine's speed drifts: the median of three)
PAGES = 200  # console page loads per store
COMMANDS = 15  # `ombridge send` commands per store


def _send_command(home) -> float:
    """Median ms of the `ombridge send` command (a new process each time, as a shell loop runs it)."""
    subprocess.run([OMBRIDGE, "--home", str(home.root), "topic", "add", "bench/cmd", "--key", "N"], check=True,
                   stdout=subprocess.DEVNULL)
    samples = []
    for n in range(COMMANDS + 1):
        t = time.perf_counter()
        subprocess.run([OMBRIDGE, "--home", str(home.root), "send", "bench/cmd", json.dumps({"N": n}), "--force"],
                       check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples[1:])  # (the first one migrates a new store)


def _console_page(home) -> float:
    """p50 ms of a logged-in console page (the deliveries listing) through a real listener."""
    import httpx

    from bridge.web import users

    conn = store.connect(home)
    users.add_user(conn, "bench", "bench-password-1")
    conn.close()
    st = launcher.spawn(home, ["--listen", "127.0.0.1:0"])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{st['listener']['port']}", timeout=30) as client:
            page = client.get("/ui/login")
            token = page.text.split('name="token" value="', 1)[1].split('"', 1)[0]
            r = client.post("/ui/login", data={"token": token, "user": "bench", "password": "bench-password-1",
                                               "next": "/ui/status"})
            assert r.status_code == 303, r.text
            samples = []
            for _ in range(PAGES):
                t = time.perf_counter()
                assert client.get("/ui/deliveries").status_code == 200
                samples.append((time.perf_counter() - t) * 1e3)
    finally:
        launcher.stop(home)
    return statistics.median(samples)


@contextmanager
def on_store(url: str | None, passfile: str | None = None):
    """Everything this process and what it starts use ``url`` as the store (None: SQLite)."""
    saved = {k: os.environ.get(k) for k in (store.STORE_ENV, "PGPASSFILE")}
    if url:
        os.environ[store.STORE_ENV] = url
        os.environ["PGPASSFILE"] = passfile or ""
    else:
        os.environ.pop(store.STORE_ENV, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _named(home, name: str):
    (home.root / "conf" / "ombridge.conf").write_text(f'[store]\nnode = "{name}"\n')
    return home


def _two_node_burst(server: PgServer) -> tuple[float, int]:
    """Closes/s of the burst with two nodes on one database, and how many Closes the second made."""
    with bench_home() as a, bench_home() as b, on_store(server.url(server.create_database("two")), server.passfile):
        _named(a, "a"), _named(b, "b")
        launcher.spawn(b)
        try:
            rate = _burst(a, outputs=[a.output, b.output])
        finally:
            launcher.stop(b)
        return rate, sum(1 for line in open(b.output, "rb") if b" Close " in line) if b.output.exists() else 0


def _failover(server: PgServer) -> tuple[float, float]:
    """Seconds from node a's kill -9 to the first of its leased Closes re-run on node b; the lease."""
    with bench_home() as a, bench_home() as b, on_store(server.url(server.create_database("fail")), server.passfile):
        _named(a, "a"), _named(b, "b")
        for h in (a, b):  # a ticket system's 2 ms per Close: the burst outlives the kill
            h.script.write_text(h.script.read_text().replace("my ($operation, $id) = @_;",
                                                             "my ($operation, $id) = @_;\n    select(undef, undef, undef, 0.002);"))
        pid_a = launcher.spawn(a)["supervisor"]["pid"]
        launcher.spawn(b)
        try:
            subprocess.run([OMBRIDGE, "--home", str(a.root), "close", "-"], check=True, stdout=subprocess.DEVNULL,
                           input="".join(f"F-{n}\n" for n in range(20_000)).encode())
            while not a.output.exists() or a.output.stat().st_size < 20_000:
                time.sleep(0.01)
            os.kill(pid_a, signal.SIGKILL)
            killed = time.monotonic()
            conn = store.connect(a)
            held = {r[0] for r in conn.execute(
                "SELECT e.key FROM subscriber_events se JOIN events e ON e.id = se.event_id JOIN claims c "
                "ON c.delivery_id = se.id WHERE se.status = 'open' AND c.attempt > se.attempts "
                "AND substr(c.owner, 1, length(?)) = ?", (nodes.claim_prefix("a"), nodes.claim_prefix("a")))}
            lease = backsync.close_timeout(conn) + 30.0
            conn.close()
            wanted = {f" {json.loads(k)['ID']}\n".encode() for k in held}
            seen = 0
            while time.monotonic() - killed < 120:
                with open(b.output, "rb") as f:
                    f.seek(seen)
                    chunk = f.read()
                if any(w in chunk for w in wanted):
                    return time.monotonic() - killed, lease
                seen += len(chunk) - len(chunk.split(b"\n")[-1])
                time.sleep(0.01)
            raise RuntimeError("no Close of the killed node was re-run within 120 s")
        finally:
            launcher.stop(b)
            subprocess.run(["pkill", "-KILL", "-f", str(a.root)], check=False)


def run() -> str:
    server = PgServer(durable=True).start()  # production's settings: the table says which
    try:
        settings = server.durability()
        sqlite_rates, pg_rates, two = [], [], []
        for _ in range(ROUNDS):
            with bench_home() as home, on_store(None):
                sqlite_rates.append(_burst(home))
            with bench_home() as home, on_store(server.url(server.create_database("burst")), server.passfile):
                pg_rates.append(_burst(home))
            two.append(_two_node_burst(server))
        two_rate, by_b = sorted(two)[len(two) // 2]
        took, lease = _failover(server)
        with bench_home() as home, on_store(server.url(server.create_database("latency")), server.passfile):
            p50, p99 = _latency(home)
        with bench_home() as home, on_store(None):
            sqlite_page, sqlite_send = _console_page(home), _send_command(home)
        with bench_home() as home, on_store(server.url(server.create_database("console")), server.passfile):
            pg_page, pg_send = _console_page(home), _send_command(home)
    finally:
        server.stop()
    sqlite_rate, pg_rate = statistics.median(sqlite_rates), statistics.median(pg_rates)
    rows = [
        [f"burst `close -` of {BURST:,} -> last Close, SQLite (median of {ROUNDS})", f"{sqlite_rate:,.0f} closes/s", "1.00"],
        [f"the same on PostgreSQL (median of {ROUNDS})", f"{pg_rate:,.0f} closes/s",
         f"{pg_rate / sqlite_rate:.2f}x SQLite (target >= 0.5)"],
        [f"the same, two nodes on one PostgreSQL database (median of {ROUNDS}; min, max)",
         f"{two_rate:,.0f} closes/s ({by_b:,} by the second); {min(two)[0]:,.0f}, {max(two)[0]:,.0f}",
         f"{two_rate / pg_rate:.2f}x one node"],
        [f"burst on PostgreSQL, each of {ROUNDS} (min, max)", f"{min(pg_rates):,.0f}, {max(pg_rates):,.0f} closes/s", ""],
        ["failover: kill -9 of a node -> first of its Closes re-run elsewhere", f"{took:.1f} s",
         f"lease {lease:.0f} s (target <= lease + 5 s)"],
        ["`send` returned -> action started, PostgreSQL (1,000 sends)", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
         "target p50 <= 10 ms"],
        [f"a console page (deliveries, logged in), SQLite (p50 of {PAGES})", f"{sqlite_page:.2f} ms", "1.00"],
        ["the same on PostgreSQL (connections lent by a pool)", f"{pg_page:.2f} ms",
         f"{pg_page / sqlite_page:.2f}x SQLite"],
        [f"the `ombridge send` command, SQLite (median of {COMMANDS})", f"{sqlite_send:.1f} ms", "1.00"],
        ["the same on PostgreSQL (psycopg imported, a new connection)", f"{pg_send:.1f} ms",
         f"{pg_send / sqlite_send:.2f}x SQLite"],
    ]
    return table(f"The event core on PostgreSQL (a local server: {settings})", ["what", "measured", "against"], rows)


if __name__ == "__main__":
    print(run())

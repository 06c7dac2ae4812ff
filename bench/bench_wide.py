"""The wide lane (issue 31), measured in one run with real supervisors:

- **a slow ticket system**: a threaded loopback HTTP server answering in 20 ms and in 200 ms, and
  a Close that calls it with HTTP::Tiny; `[ombacksync] children` = 1, 4 and 16 against the ideal
  N / latency (goal >= 0.8x at N = 16), and 2,000 Closes at 200 ms with N = 16 (goal: cleared in
  <= 1.25 x 2,000 x 0.2 / 16 s);
- **isolation**: with N = 4 one Close that hangs, against none (the others' delay, goal <= 1 s);
  a gateway answering in 5 s against an idle one: how long a command subscriber of another topic
  waits, with one action lane (goal: delayed <= 1 s);
- **the no-op burst**: 100,000 Closes of the bundled example with N = 4 against N = 1;
- **memory**: the RSS of the supervisor and of each child with N = 16.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_supervisor import _burst, ping_subscriber
from common import bench_home, table

from bridge import store
from bridge.client import control, launcher
from bridge.delivery import backsync
from bridge.eventcore import catalog, events, omimap
from bridge.syncback.omitopic import send_close

OMBRIDGE = str(Path(sys.executable).parent / "ombridge")

TICKET_SCRIPT = r"""use strict;
use warnings;
use HTTP::Tiny;
my $http;
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') { $http = HTTP::Tiny->new(timeout => 60, keep_alive => 1); return 1 }
    sleep 600 if $id eq 'HANG';
    my $r = $http->get("http://127.0.0.1:PORT/close/$id");
    die "the ticket system answered $r->{status}\n" unless $r->{success};
    return 1;
}
1;
"""

RUNS = [(0.020, 1, 200), (0.020, 4, 800), (0.020, 16, 3200), (0.200, 1, 20), (0.200, 4, 80), (0.200, 16, 2000)]


class TicketSystem:
    """A threaded loopback HTTP server answering every GET after ``latency`` seconds; counts them."""

    def __init__(self) -> None:
        self.latency = 0.02
        self.answered = 0
        self.first = self.last = 0.0  # the first request's arrival, the last answer (see rate)
        self._lock = threading.Lock()
        system = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # (else each answer waits 40 ms for a delayed ACK)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                arrived = time.perf_counter()
                time.sleep(system.latency)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with system._lock:
                    system.answered += 1
                    system.first = min(system.first, arrived)
                    system.last = time.perf_counter()

        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self, latency: float) -> int:
        """A new run at ``latency``: returns the answers so far."""
        with self._lock:
            self.latency, self.first, self.last = latency, float("inf"), 0.0
            return self.answered

    def rate(self, count: int) -> float:
        """Closes a second from the first request's arrival to the last answer (the steady rate,
        without the command that sent the Closes starting)."""
        return count / (self.last - self.first)

    def wait_for(self, count: int, deadline: float) -> None:
        while self.answered < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.answered} of {count} Closes reached the ticket system")
            time.sleep(0.002)

    def stop(self) -> None:
        self.server.shutdown()


def _configure(home, children: int, script: str | None = None) -> None:
    (home.root / "conf" / "ombridge.conf").write_text(f"[ombacksync]\nchildren = {children}\n")
    if script is not None:
        home.script.write_text(script)


def _start(home, *options: str) -> dict:
    launcher.spawn(home, list(options))
    deadline = time.monotonic() + 120
    while True:
        st = control.request(home.root, "status")
        if st["ombacksync"]["state"] == "running":
            return st
        if time.monotonic() > deadline:
            raise RuntimeError(f"ombacksync did not start: {st['ombacksync']}")
        time.sleep(0.05)


def _close(home, ids: list[str]) -> None:
    subprocess.run([OMBRIDGE, "--home", str(home.root), "close", "-"], input="".join(i + "\n" for i in ids).encode(),
                   check=True, stdout=subprocess.DEVNULL)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


PLAIN = r"""use HTTP::Tiny; my $h = HTTP::Tiny->new(keep_alive => 1);
for (1 .. $ARGV[1]) { my $r = $h->get("http://127.0.0.1:$ARGV[0]/close/P$_"); die unless $r->{success} }"""


def plain_perl(tickets: TicketSystem, latency: float, children: int, count: int) -> float:
    """The machine's own ceiling: ``children`` plain perl loops calling the ticket system, no ombridge."""
    base = tickets.reset(latency)
    loops = [subprocess.Popen(["perl", "-e", PLAIN, str(tickets.port), str(count // children)])
             for _ in range(children)]
    for loop in loops:
        loop.wait()
    tickets.wait_for(base + count // children * children, time.monotonic() + 60)
    return tickets.rate(count // children * children)


def slow_ticket_system(tickets: TicketSystem) -> tuple[list[list[str]], str]:
    """Closes/s at each latency and N, against N / latency and against N plain perl loops; and
    the memory with N = 16."""
    rows, memory = [], ""
    for latency, children, count in RUNS:
        ceiling = plain_perl(tickets, latency, children, count)
        with bench_home() as home:
            _configure(home, children, TICKET_SCRIPT.replace("PORT", str(tickets.port)))
            st = _start(home)
            try:
                base = tickets.reset(latency)
                start = time.perf_counter()
                _close(home, [f"T{n}" for n in range(count)])
                tickets.wait_for(base + count, time.monotonic() + 600)
                took = time.perf_counter() - start
                if children == 16 and latency == 0.2:
                    pids = [c["pid"] for c in control.request(home.root, "status")["ombacksync"]["children"]]
                    kib = [_rss_kib(p) for p in pids]
                    memory = (f"supervisor {_rss_kib(st['supervisor']['pid']) / 1024:.1f} MiB; each child "
                              f"{min(kib) / 1024:.1f}-{max(kib) / 1024:.1f} MiB (16 children, "
                              f"{sum(kib) / 1024:.0f} MiB in all)")
            finally:
                launcher.stop(home)
        rate, ideal = tickets.rate(count), children / latency
        against = f"{rate / ideal:.2f}x the ideal {ideal:,.0f}/s" + (" (goal >= 0.8x)" if children == 16 else "")
        against += f"; {rate / ceiling:.2f}x {children} plain perl loop(s) ({ceiling:,.1f}/s)"
        if children == 16 and latency == 0.2:
            against += f"; `close -` to the last answer {took:.1f} s (goal <= {1.25 * count * latency / children:.1f} s)"
        rows.append([f"{latency * 1000:.0f} ms ticket system, N = {children}, {count:,} Closes",
                     f"{rate:,.1f} Closes/s", against])
    return rows, memory


def hung_close(tickets: TicketSystem) -> list[str]:
    """With N = 4, how much later 400 Closes clear when one Close ahead of them hangs."""
    took = {}
    for hang in (False, True):
        with bench_home() as home:
            _configure(home, 4, TICKET_SCRIPT.replace("PORT", str(tickets.port)))
            conn = store.connect(home)
            catalog.update_subscriber(conn, backsync.ensure_backsync(conn), timeout=10.0)  # (the hang's end)
            conn.close()
            _start(home)
            try:
                if hang:
                    _close(home, ["HANG"])
                    time.sleep(0.2)  # it is in a child
                base = tickets.reset(0.02)
                start = time.perf_counter()
                _close(home, [f"H{n}" for n in range(400)])
                tickets.wait_for(base + 400, time.monotonic() + 600)
                took[hang] = time.perf_counter() - start
            finally:
                launcher.stop(home)
    delay = took[True] - took[False]
    return ["one hung Close, N = 4: 400 Closes at 20 ms clear", f"{took[True]:.2f} s against {took[False]:.2f} s",
            f"delayed {delay:+.2f} s (goal <= 1 s)"]


class LateGateway:
    """OMi's gateway answering every request after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        gateway = self
        self.delay = delay

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(gateway.delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def _ping_latency(home, conn, fifo: Path, sends: int) -> list[float]:
    samples = []
    with open(fifo, "r+b", buffering=0) as reader:
        for n in range(sends):
            sent = time.time()
            events.send(conn, "bench/ping", {"N": n}, on_stored=lambda: control.ring(home.root))
            reader.read(64)
            samples.append(time.time() - sent)
    return samples


def late_gateway() -> list[str]:
    """With one action lane: a command subscriber's send -> action, idle and while the sync back
    to OMi waits 5 s for the gateway."""
    gateway = LateGateway(5.0)
    with bench_home() as home:
        (home.root / "conf" / "ombridge.conf").write_text(f'[omi]\ngateway = "{gateway.url}"\nuser = "bench"\n')
        subprocess.run([OMBRIDGE, "--home", str(home.root), "omi", "password"], input=b"Bench-Pa55word\n" * 2,
                       check=True, capture_output=True)
        fifo, conn = ping_subscriber(home)
        with store.transaction(conn):
            omimap.remember(conn, [(f"omi-{n}", f"INC-{n}", None) for n in range(10)])
        _start(home, "--workers", "1")
        try:
            idle, where = _ping_latency(home, conn, fifo, 20), store.Store(home)
            for n in range(10):
                send_close(where, f"INC-{n}", on_stored=lambda: control.ring(home.root))
            time.sleep(0.3)  # the sync back is waiting for the gateway
            busy = _ping_latency(home, conn, fifo, 20)
        finally:
            conn.close()
            launcher.stop(home)
    gateway.server.shutdown()
    delay = max(busy) - statistics.median(idle)
    return ["a gateway answering in 5 s, 1 action lane: a command of another topic, send -> action",
            f"max {max(busy) * 1000:.1f} ms (median {statistics.median(busy) * 1000:.1f} ms) against "
            f"{statistics.median(idle) * 1000:.1f} ms idle", f"delayed {delay:+.3f} s (goal <= 1 s)"]


def noop_bursts() -> list[str]:
    rates: dict[int, list[float]] = {1: [], 4: []}
    for children in (1, 4, 1, 4, 1, 4):
        with bench_home() as home:
            _configure(home, children)
            rates[children].append(_burst(home))
    one, four = statistics.median(rates[1]), statistics.median(rates[4])
    return ["no-op burst: `close -` of 100,000, the bundled example, N = 4 against N = 1 (median of 3 each, interleaved)",
            f"{four:,.0f} against {one:,.0f} Closes/s", f"{four / one:.2f}x (goal: not slower)"]


def run() -> str:
    tickets = TicketSystem()
    try:
        rows, memory = slow_ticket_system(tickets)
        rows.append(hung_close(tickets))
    finally:
        tickets.stop()
    rows.append(late_gateway())
    rows.append(noop_bursts())
    rows.append(["memory with N = 16", memory, ""])
    return table("The wide lane: several perl children, lanes a slow destination cannot block",
                 ["what", "measured", "against"], rows)


if __name__ == "__main__":
    print(run())

"""Close throughput with the bundled example: the bridge's pipelined close_many against spawning
perl per Close and against calling OMBackSync in-process in one perl, side by side in one run.

Targets (issue 2): bridge >= 0.5 x in-process and >= 300 x spawn-per-event.
"""

from __future__ import annotations

import subprocess

from common import bench_home, machine, table, timed

from bridge.ombacksync.perlhost import PerlHost

N = 50_000  # closes for the bridge and in-process runs
SPAWNS = 300  # closes for the spawn-per-event run

IN_PROCESS = r"""
use Time::HiRes qw(time);
do $ARGV[0] or die "cannot load $ARGV[0]: $@ $!";
OMBackSync('Init');
my $n = $ARGV[1];
my $t0 = time;
OMBackSync('Close', "INPROC-$_") for 1 .. $n;
printf "%.6f\n", time - $t0;
"""

SPAWN = r"do $ARGV[0] or die $@; OMBackSync('Close', $ARGV[1])"


def spawn_per_event_rate(home, count: int) -> float:
    """Closes per second when every Close spawns a perl that loads the script (the bundled example)."""
    env, script = home.perl_env(), str(home.script)

    def spawn_all() -> None:
        for i in range(count):
            subprocess.run(["perl", "-e", SPAWN, script, f"SPAWN-{i}"], env=env, check=True)

    return count / timed(spawn_all)


def in_process_rate(home, count: int) -> float:
    """Closes per second of one perl that loads the script and calls OMBackSync in a loop."""
    out = subprocess.run(["perl", "-e", IN_PROCESS, str(home.script), str(count)], env=home.perl_env(),
                         check=True, capture_output=True, text=True)
    return count / float(out.stdout)


def run() -> str:
    with bench_home() as home:
        with PerlHost(home) as host:
            host.start()
            ids = [f"BRIDGE-{i}" for i in range(N)]
            outcomes: list = []
            bridge_s = timed(lambda: outcomes.extend(host.close_many(ids)))
            assert all(o.ok for o in outcomes), "bridge run failed"

        inproc_rate = in_process_rate(home, N)

        spawn_rate = spawn_per_event_rate(home, SPAWNS)
        lines = sum(1 for _ in home.output.open())
        assert lines == N + 1 + N + 1 + SPAWNS, f"unexpected line count {lines}"

    bridge_rate = N / bridge_s
    rows = [
        ["bridge `close_many` (persistent child, pipelined)", f"{N:,}", f"{bridge_rate:,.0f}", "1.00"],
        ["in-process (one perl calling OMBackSync in a loop)", f"{N:,}", f"{inproc_rate:,.0f}",
         f"{bridge_rate / inproc_rate:.2f} (target >= 0.5)"],
        ["spawn `perl` per Close", f"{SPAWNS:,}", f"{spawn_rate:,.0f}",
         f"{bridge_rate / spawn_rate:,.0f} (target >= 300)"],
    ]
    return table("Backsync: Close throughput, bundled example", ["method", "closes", "closes/s", "bridge ÷ method"], rows)


if __name__ == "__main__":
    print(f"machine: {machine()}\n")
    print(run())

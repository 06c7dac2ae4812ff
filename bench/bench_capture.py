"""What keeping each Close's own output costs (issue 29): the same no-op Closes with output tails
(the default: the host ends each call's output with a mark on the script's output pipe, the
bridge splits the pipe at the marks) and without (`[ombacksync] output_tails = false`: the
script's output only goes to the log), alternated in one run, the median of each:

- the burst: `ombridge close -` of 100,000 IDs through a running supervisor, to the last Close
  (target: tails cost <= 5%), as wall time and as the CPU the supervisor and its perl host
  spent per Close; the cost is the median over the pairs (one run with tails, one without, back
  to back), since this shared machine drifts between pairs far more than within one;
- `close_many` on the perl host alone (pipelined, no event core): the per-call cost laid bare,
  wall time and the CPU of the perl host and of the bridge per Close.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from bench_supervisor import OMBRIDGE
from common import bench_home, table

from bridge.client import control, launcher
from bridge.ombacksync.perlenv import HostSettings
from bridge.ombacksync.perlhost import PerlHost

BURST = 100_000
CALLS = 50_000
ROUNDS = 7
NO_OP = r"""sub OMBackSync {
    my ($op, $id) = @_;
    if (defined $id && $id eq 'LAST') {    # the burst is over: say so, once
        open(my $fh, '>', "$ENV{OvDataDir}/tmp/done") or die "cannot write: $!\n";
        close $fh;
    }
    return 1;
}
1;
"""
TICK = os.sysconf("SC_CLK_TCK")


def _configure(home, tails: bool) -> None:
    home.script.write_text(NO_OP)
    conf = home.root / "conf" / "ombridge.conf"
    conf.write_text("" if tails else "[ombacksync]\noutput_tails = false\n")
    (home.root / "tmp" / "done").unlink(missing_ok=True)


def _burst(home, tails: bool) -> tuple[float, float]:
    """(closes/s, CPU µs per Close of the supervisor and its perl host) of `close -` of BURST
    no-op Closes through a running supervisor."""
    _configure(home, tails)
    ids = "".join(f"B-{n}\n" for n in range(BURST - 1)).encode() + b"LAST\n"
    done = home.root / "tmp" / "done"
    status = launcher.spawn(home)
    try:
        pids = [control.read_pid(home), status["ombacksync"]["pid"]]  # the supervisor and its perl host
        assert all(pids), status
        cpu = sum(_cpu_of(pid) for pid in pids)
        start = time.perf_counter()
        subprocess.run([OMBRIDGE, "--home", str(home.root), "close", "-"], input=ids, check=True,
                       stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not done.exists():
            assert time.monotonic() < deadline, "the burst did not end within 600 s"
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        cpu = sum(_cpu_of(pid) for pid in pids) - cpu
    finally:
        launcher.stop(home)
    return BURST / elapsed, cpu / BURST * 1e6


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _close_many(home, tails: bool) -> tuple[float, float, float]:
    """(wall s, bridge CPU s, perl CPU s) of close_many of CALLS no-op Closes on the host alone."""
    _configure(home, tails)
    with PerlHost(home, settings=HostSettings(output_tails=tails)) as host:
        host.start()
        assert host.pid is not None
        ids = [f"C-{n}" for n in range(CALLS)]
        cpu, perl = time.process_time(), _cpu_of(host.pid)
        start = time.perf_counter()
        outcomes = host.close_many(ids)
        wall = time.perf_counter() - start
        cpu, perl = time.process_time() - cpu, _cpu_of(host.pid) - perl
    assert all(o.ok for o in outcomes)
    return wall, cpu, perl


def _paired(measure, home) -> dict[bool, list]:
    """ROUNDS measures with tails and without, each pair run back to back (which one first
    alternates): this machine drifts between rounds far more than within one."""
    runs: dict[bool, list] = {True: [], False: []}
    for n in range(ROUNDS):
        for tails in (True, False) if n % 2 == 0 else (False, True):
            runs[tails].append(measure(home, tails))
    return runs


def _cost(runs: dict[bool, list], of) -> float:
    """The median over the pairs of (with tails / without) - 1 of ``of(measure)``."""
    return statistics.median(of(w) / of(wo) - 1 for w, wo in zip(runs[True], runs[False]))


def run() -> str:
    with bench_home() as home:
        bursts = _paired(_burst, home)
        calls = _paired(_close_many, home)
    rate = {t: statistics.median(b[0] for b in bursts[t]) for t in bursts}
    burst_us = {t: statistics.median(b[1] for b in bursts[t]) for t in bursts}
    wall = {t: statistics.median(c[0] for c in calls[t]) for t in calls}
    us = {t: [statistics.median(c[i] for c in calls[t]) / CALLS * 1e6 for i in (1, 2)] for t in calls}
    rows = [
        [f"burst: `close -` of {BURST:,} no-op Closes, supervisor, with output tails",
         f"{rate[True]:,.0f} closes/s; {burst_us[True]:.1f} µs CPU per Close",
         f"wall {_cost(bursts, lambda b: 1 / b[0]):+.1%} per Close (target <= +5%); "
         f"CPU {_cost(bursts, lambda b: b[1]):+.1%}"],
        ["the same without output tails", f"{rate[False]:,.0f} closes/s; {burst_us[False]:.1f} µs CPU per Close", ""],
        [f"`close_many` of {CALLS:,} no-op Closes, perl host alone, with output tails",
         f"{CALLS / wall[True]:,.0f} closes/s; CPU per Close: perl {us[True][1]:.1f} µs, bridge {us[True][0]:.1f} µs",
         f"wall {_cost(calls, lambda c: c[0]):+.1%}, CPU {_cost(calls, lambda c: c[1] + c[2]):+.1%} per Close"],
        ["the same without output tails",
         f"{CALLS / wall[False]:,.0f} closes/s; CPU per Close: perl {us[False][1]:.1f} µs, bridge {us[False][0]:.1f} µs",
         ""],
    ]
    return table("Output tails: what keeping each Close's output costs",
                 ["what", f"measured (median of {ROUNDS})", "tails cost (median of the pairs)"], rows)


if __name__ == "__main__":
    print(run())

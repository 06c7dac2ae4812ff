"""Script output floods (issue 13): one Close that prints 20 MB on STDOUT (a script with debug
output switched on, dumping a SOAP response), under the running supervisor, against the same perl
printing the same into `cat` (target: within 10x). Also how much of it reached the log.

STDOUT is buffered as plain perl buffers it on a pipe (the host flushes it after each call,
issue 29); a script that sets `$| = 1` makes one write per line, here and under plain perl:
the third and fourth rows compare that case the same way.
"""

from __future__ import annotations

import statistics
import subprocess
import time

from common import bench_home, table

from bridge import store
from bridge.client import control, launcher
from bridge.delivery import backsync

MB = 20
LINE = b"x" * 79  # + "\n": 80 bytes a line
LINES = MB * (1 << 20) // 80
ROUNDS = 3
FLOOD = f"""use strict;
use warnings;
sub OMBackSync {{
    my ($op, $id) = @_;
    if ($op eq 'Close') {{
        local $| = $id =~ /^FLUSHED/ ? 1 : 0;    # 1: a write per line, as a script that sets $| makes
        print "{LINE.decode()}\\n" for 1 .. {LINES};
        my $dir = ($ENV{{OvDataDir}} || '.') . '/tmp';
        open(my $fh, '>>', "$dir/OMBSOutput.txt") or die "cannot open: $!\\n";
        print {{$fh}} "Close $id\\n";
        close($fh) or die "cannot write: $!\\n";
    }}
    return 1;
}}
1;
"""


def _perl_into_cat(home, autoflush: bool = False) -> float:
    program = "do $ARGV[0] or die $@ || $!; OMBackSync('Close', $ARGV[1])"
    start = time.perf_counter()
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as cat:
        subprocess.run(["perl", "-e", program, str(home.script), "FLUSHED-CAT" if autoflush else "CAT"],
                       stdout=cat.stdin, check=True, env=home.perl_env())
        assert cat.stdin is not None
        cat.stdin.close()
    return time.perf_counter() - start


def _bridge_close(home, conn, n: int, flushed: bool = False) -> float:
    close_id = f"{'FLUSHED' if flushed else 'FLOOD'}-{n}"
    want = f"Close {close_id}\n"
    start = time.perf_counter()
    backsync.close_events(conn, [close_id], on_stored=lambda: control.ring(home.root))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if home.output.exists() and home.output.read_text().endswith(want):
            return time.perf_counter() - start
        time.sleep(0.002)
    raise RuntimeError(f"{close_id} did not reach the script within 120 s")


def run() -> str:
    with bench_home() as home:
        home.script.write_text(FLOOD)
        conn = store.connect(home)
        launcher.spawn(home)
        try:
            bridge = statistics.median(_bridge_close(home, conn, n) for n in range(ROUNDS))
            bridge_flushed = statistics.median(_bridge_close(home, conn, n, flushed=True) for n in range(ROUNDS))
        finally:
            launcher.stop(home)
        logged = sum(p.stat().st_size for p in home.log_dir.glob("ombridge.log*"))
        cat = statistics.median(_perl_into_cat(home) for _ in range(ROUNDS))
        flushed = statistics.median(_perl_into_cat(home, autoflush=True) for _ in range(ROUNDS))
    rows = [
        [f"a Close printing {MB} MB ({LINES:,} lines), supervisor running", f"{bridge * 1e3:,.0f} ms",
         f"{bridge / cat:.1f}x (target <= 10)"],
        ["the same perl printing the same into `cat`", f"{cat * 1e3:,.0f} ms", "1.0x"],
        ["the same Close with `$| = 1` (a write per line), supervisor running", f"{bridge_flushed * 1e3:,.0f} ms",
         f"{bridge_flushed / flushed:.1f}x the next row"],
        ["the same perl with `$| = 1` into `cat`", f"{flushed * 1e3:,.0f} ms", f"{flushed / cat:.1f}x the second row"],
        [f"log written for {2 * ROUNDS} such Closes (budget 64 KiB/s)", f"{logged / 1024:,.0f} KiB", ""],
    ]
    return table("Script output flood", ["what", "wall (median of 3)", "bridge ÷ cat"], rows)


if __name__ == "__main__":
    print(run())

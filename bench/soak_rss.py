"""Resource bounds: supervisor and perl child RSS over 1,000,000 Close calls (`make soak`).

Sends the closes in rounds of 100,000 (`ombridge close -`), waits for each round to be delivered,
and samples VmRSS of both processes; the figures must stay flat (no growth per round).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import bench_home, machine, table

from bridge.client import control, launcher

ROUNDS = 10
PER_ROUND = 100_000
OMBRIDGE = str(Path(sys.executable).parent / "ombridge")


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run() -> str:
    rows = []
    with bench_home() as home:
        status = launcher.spawn(home, ["--retention", "0"])
        sup, perl = status["supervisor"]["pid"], status["ombacksync"]["pid"]
        rows.append(["0", f"{rss_kib(sup):,}", f"{rss_kib(perl):,}", ""])
        try:
            for n in range(ROUNDS):
                ids = "".join(f"SOAK-{n}-{i}\n" for i in range(PER_ROUND)).encode()
                start = time.perf_counter()
                subprocess.run([OMBRIDGE, "--home", str(home.root), "close", "-"], input=ids, check=True,
                               stdout=subprocess.DEVNULL)
                while control.request(home.root, "status")["backlog"]["open"]:
                    time.sleep(0.1)
                elapsed = time.perf_counter() - start
                st = control.request(home.root, "status")
                assert st["ombacksync"]["pid"] == perl, "the perl child was restarted"
                rows.append([f"{(n + 1) * PER_ROUND:,}", f"{rss_kib(sup):,}", f"{rss_kib(perl):,}",
                             f"{PER_ROUND / elapsed:,.0f}"])
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        finally:
            launcher.stop(home)
    return table("Soak: RSS over 1,000,000 closes (bundled example)",
                 ["closes delivered", "supervisor RSS KiB", "perl child RSS KiB", "closes/s this round"], rows)


if __name__ == "__main__":
    print(f"machine: {machine()}\n")
    print(run())

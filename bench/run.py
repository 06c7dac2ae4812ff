"""`make bench`: every benchmark, one table each, measured in one run on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_backsync  # noqa: E402
import bench_capture  # noqa: E402
import bench_console  # noqa: E402
import bench_events  # noqa: E402
import bench_flood  # noqa: E402
import bench_pg  # noqa: E402
import bench_supervisor  # noqa: E402
import bench_web  # noqa: E402
import bench_wide  # noqa: E402
from common import machine  # noqa: E402

BENCHES = [bench_backsync, bench_events, bench_supervisor, bench_wide, bench_web, bench_console, bench_flood,
           bench_capture, bench_pg]


def main() -> None:
    """Run each benchmark and print its table."""
    print(f"machine: {machine()}\n")
    for bench in BENCHES:
        print(bench.run(), flush=True)


if __name__ == "__main__":
    main()

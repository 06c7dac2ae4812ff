"""The burst of 100,000 Closes on two checkouts of ombridge, alternated, on SQLite and on
PostgreSQL (production's fsync, synchronous_commit and full_page_writes): a change of the
queue's writes measured against the code before it, in one sitting, since this machine's speed
drifts between runs by more than such a change.

    bench/ab_burst.py BEFORE AFTER [ROUNDS]

BEFORE and AFTER are checkouts (``git worktree add /tmp/before <commit>``), each with its own
``.venv`` (``make`` there, or ``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``).
Each burst runs in a process of the checkout's own Python, through its ``bench/bench_pg.py``.
Not part of ``make bench``: it compares two versions, not one against its ceiling.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ONE = """
import sys
sys.path.insert(0, sys.argv[1] + "/bench")
from bench_pg import PgServer, _burst, bench_home, on_store
if sys.argv[2] == "sqlite":
    with bench_home() as home, on_store(None):
        print(_burst(home))
else:
    server = PgServer(durable=True).start()
    try:
        with bench_home() as home, on_store(server.url(server.create_database("burst")), server.passfile):
            print(_burst(home))
    finally:
        server.stop()
"""


def burst(root: Path, store: str) -> float:
    """Closes/s of one burst with the code of ``root`` on ``store`` (sqlite or postgresql)."""
    out = subprocess.run([str(root / ".venv" / "bin" / "python"), "-c", ONE, str(root), store], cwd=root,
                         check=True, capture_output=True, text=True, timeout=900).stdout
    return float(out.split()[-1])


def main() -> None:
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    roots = {"before": Path(sys.argv[1]).resolve(), "after": Path(sys.argv[2]).resolve()}
    rounds = int(sys.argv[3]) if len(sys.argv) == 4 else 3
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for store in ("sqlite", "postgresql"):
            for name, root in roots.items():
                rates.setdefault((store, name), []).append(burst(root, store))
                print(f"{store:10} {name:6} {rates[store, name][-1]:9,.0f} closes/s", flush=True)
    for name in roots:
        lite, pg = (statistics.median(rates[s, name]) for s in ("sqlite", "postgresql"))
        print(f"{name}: SQLite {lite:,.0f}/s, PostgreSQL {pg:,.0f}/s (medians of {rounds}): {pg / lite:.2f}x")


if __name__ == "__main__":
    main()

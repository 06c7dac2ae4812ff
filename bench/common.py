"""Helpers shared by the benchmark programs: a throwaway home, timing, and a markdown table."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.home import Home  # noqa: E402

# A pristine copy of the bundled example: the repository's own may have been edited by an operator.
EXAMPLE = ROOT / "tests" / "fixtures" / "example.pl"


@contextmanager
def bench_home() -> Iterator[Home]:
    """A home in a temporary folder holding the bundled example script."""
    with tempfile.TemporaryDirectory(prefix="ombridge-bench-") as tmp:
        root = Path(tmp)
        (root / "conf" / "backsync").mkdir(parents=True)
        (root / "tmp").mkdir()
        shutil.copy(EXAMPLE, root / "conf" / "backsync" / "OMBackSync.pl")
        yield Home(root)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> str:
    """One line naming the machine the figures were measured on."""
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    perl = subprocess.run(["perl", "-e", "printf '%vd', $^V"], capture_output=True, text=True).stdout
    return (f"{platform.machine()}, {os.cpu_count()} cores, {cpu}; Linux {platform.release()}; "
            f"Python {platform.python_version()}, perl {perl}")


def table(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table with a title line."""
    out = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"

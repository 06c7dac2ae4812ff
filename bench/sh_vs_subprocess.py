"""The cost of the `perl -c` check through `sh` and through stdlib `subprocess` (issue 13).

Not part of `make bench`: ombridge no longer depends on `sh`, this program is how the decision in
docs/decisions.md was measured. Run it with `sh` installed (`.venv/bin/pip install sh`):

    .venv/bin/python bench/sh_vs_subprocess.py

It measures, side by side: the import (a fresh interpreter, bytecode compiled), and per check the
wall time and this process's CPU time of `perl -I DIR -c OMBackSync.pl` of the example.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import sysconfig
import time

from common import EXAMPLE, table

CALLS = 100
IMPORTS = 15


def _import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(IMPORTS)]
    return statistics.median(runs) * 1e3


def _per_call(check) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(CALLS):
        check()
    return (time.perf_counter() - wall) / CALLS * 1e3, (time.process_time() - cpu) / CALLS * 1e3


def main() -> None:
    """Print the table."""
    import sh

    compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=1)  # as installed: bytecode present
    argv = ["perl", "-I", str(EXAMPLE.parent), "-c", str(EXAMPLE)]
    env = dict(os.environ)

    def with_subprocess() -> None:
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)

    perl = sh.Command("perl")

    def with_sh() -> None:
        perl(*argv[1:], _env=env, _err_to_out=True, _ok_code=range(256), _return_cmd=True)

    calls = {name: [] for name in ("subprocess", "sh")}
    for _ in range(3):  # interleaved, so that a busy neighbour hurts both alike
        calls["subprocess"].append(_per_call(with_subprocess))
        calls["sh"].append(_per_call(with_sh))
    rows = []
    for name, module in (("subprocess", "subprocess"), ("sh", "sh")):
        wall = statistics.median(w for w, _ in calls[name])
        cpu = statistics.median(c for _, c in calls[name])
        rows.append([f"`{name}`", f"{_import_ms(module):.1f} ms", f"{wall:.2f} ms", f"{cpu:.2f} ms"])
    print(table(f"`perl -c` of the example, {CALLS} checks x 3 interleaved",
                ["through", "import (fresh interpreter)", "wall per check", "our CPU per check"], rows))


if __name__ == "__main__":
    main()

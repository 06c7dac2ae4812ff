"""The client side of a supervisor: start one in the background, stop it, and what ``status``
shows when none runs. ``ombridge start``/``stop``/``status``, the benchmarks and the chaos tests
use these; the supervisor itself (:mod:`bridge.daemon.supervisor`) never does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from .. import store
from ..errors import AlreadyRunning, BridgeError, NotRunning
from ..eventcore.backlog import stored_backlog
from ..home import Home
from ..model import DeliveryStatus, HostState, ManagerState, SupervisorState
from . import control

START_TIMEOUT = 30.0
STARTING_GRACE = 3.0  # seconds `start` waits for ombacksync to leave "starting" before it returns


def spawn(home: Home, options: list[str] | None = None, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start a supervisor in the background with ``ombridge start`` ``options``; returns its
    status once it answers.

    Raises :class:`AlreadyRunning`, or :class:`BridgeError` with the reason it did not start.
    """
    try:
        status = control.request(home.root, "status", timeout=5)
        raise AlreadyRunning(status["supervisor"]["pid"])
    except NotRunning:
        pass  # (or a dying one: the pid file's lock decides who runs)
    home.log_dir.mkdir(parents=True, exist_ok=True)
    out_path = home.log_dir / "ombridge.out"
    with open(out_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--home", str(home.root), "start", "--foreground", "--no-stderr-log",
             *(options or [])],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    settled_by = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BridgeError(f"the supervisor did not start: {_last_line(out_path) or f'exit status {proc.returncode}'}")
        try:
            status = control.request(home.root, "status", timeout=5)
        except NotRunning:
            time.sleep(0.02)  # not listening yet
            continue
        # Up. ombacksync starts beside it: wait a moment for the quick answers (a script that does
        # not compile), not for a slow Init.
        settled_by = settled_by or time.monotonic() + STARTING_GRACE
        # (stopped: the start job has not begun yet; the script is not even checked)
        if status["ombacksync"]["state"] not in (HostState.STARTING, HostState.STOPPED) \
                or time.monotonic() > settled_by:
            return status
        time.sleep(0.05)
    proc.kill()
    raise BridgeError(f"the supervisor did not answer within {timeout:g}s (see {home.log_dir / 'ombridge.log'})")


def _last_line(path: Any) -> str:
    try:
        lines = [line for line in open(path, encoding="utf-8", errors="replace").read().splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].removeprefix("ombridge: error: ") if lines else ""


def stop(home: Home, timeout: float = 120.0) -> int | None:
    """Ask the supervisor to stop and wait until it has exited; returns its pid (None: not running).

    Asked while it is already stopping, it stops at once.
    """
    result = control.request(home.root, "stop", timeout=10)
    pid = int(result["pid"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return pid
        time.sleep(0.02)
    raise BridgeError(f"the supervisor (pid {pid}) is still stopping after {timeout:g}s; `ombridge stop` again stops it at once")


def offline_status(home: Home) -> dict[str, Any]:
    """What ``status`` shows when no supervisor runs: everything stopped, and the stored backlog."""
    backlog: dict[str, int] | None = {DeliveryStatus.OPEN.value: 0, DeliveryStatus.FAILED.value: 0}
    nodes: list[dict[str, Any]] = []
    troubles: list[str] = []
    paused: list[dict[str, Any]] = []
    if home.db.exists() or store.Store(home).shared:  # (a shared store: other nodes may run)
        backlog, nodes, troubles, paused = stored_backlog(home)
    return {"supervisor": {"state": SupervisorState.STOPPED.value, "pid": None},
            "ombacksync": {"state": HostState.STOPPED.value},
            "eventmanager": {"state": ManagerState.STOPPED.value}, "backlog": backlog, "paused": paused,
            "nodes": nodes, "degraded": troubles}


def is_alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


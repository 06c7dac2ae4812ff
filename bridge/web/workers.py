"""The HTTP listener in processes of its own (``[listen] processes = N``, ``start
--listen-processes N``): the supervisor binds the socket and keeps N listener processes
(:mod:`bridge.web.worker`) accepting on it, each with its HTTP, XML parsing and group commit on a
GIL of its own, while the supervisor keeps the Event Manager and the perl children.

:class:`ListenerProcesses` is to the supervisor what :class:`bridge.web.listener.Listener` is
(start, stop, status; the same states), so ``status``, ``/metrics`` and the console still see
one listener: its status adds up the processes'. What the listener promises holds in each
process (a 2xx only once the events are committed, 503 while the event core is away, TLS), and
the parts that must be one across them are the supervisor's, reached through each process's
pipe (:mod:`bridge.web.pipes`): the login throttle, and the console's signing key (given at
start). A process that dies is started again within half a second; when the supervisor dies,
its processes exit at once (their pipe ends).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import BridgeError
from ..home import Home
from ..model import LISTENER_MOVES, ListenerState, check_transition
from . import tls
from .auth import FailureThrottle
from .config import ListenConfig
from .listener import DRAIN_TIMEOUT, START_TIMEOUT, bind, described, url_of
from .pipes import Pipe, PipeClosed

log = logging.getLogger("ombridge.web")
REVIVE_EVERY = 0.5  # seconds between two looks for a listener process that died
SUMMED = ("requests", "auth_failures", "auth_throttled", "commits", "events", "pending")
# what a listener process may call of the throttle (RemoteThrottle's methods; "size": len())
THROTTLE_CALLS = {f.__name__ for f in (FailureThrottle.admit, FailureThrottle.release, FailureThrottle.failed,
                                       FailureThrottle.succeeded, FailureThrottle.count, FailureThrottle.delay)}


class _Process:
    """One listener process: its ``Popen``, its pipe, and how its start went."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], pipe: Pipe) -> None:
        self.index, self.proc, self.pipe = index, proc, pipe
        self.started = threading.Event()
        self.failure: str | None = None
        self.last: dict[str, Any] = {}  # its status when last asked (carried over when it dies)


class ListenerProcesses:
    """start() / stop() / status() of N listener processes sharing one socket."""

    def __init__(self, home: Home, config: ListenConfig, *, store: Any = None,
                 wake: Callable[[], None] | None = None, status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.home = home
        self.config = config  # (store, wake: each process has a Store of its own and rings the doorbell)
        self.supervisor_status = status  # what a process's console and /metrics show
        self.state = ListenerState.STOPPED
        self._state_lock = threading.Lock()
        self.throttle = FailureThrottle()  # every process's, through its pipe
        self._throttle_lock = threading.Lock()
        self._session_key = secrets.token_bytes(32)
        self._processes: list[_Process] = []
        self._sock: Any = None
        self._stopping = threading.Event()
        self._reviver: threading.Thread | None = None
        self.address: tuple[str, int] | None = None
        self.started_at: float | None = None
        self.revived = 0
        self._carried: dict[str, Any] = {"by_status": {}}  # counts of processes that died, as last seen

    def _change_state(self, new: ListenerState) -> None:
        """The one place the listener's state changes (guarded by :data:`model.LISTENER_MOVES`)."""
        with self._state_lock:
            old = self.state
            check_transition(LISTENER_MOVES, old, new, "the HTTP listener")
            self.state = new
        log.info("HTTP listener %s -> %s", old.value, new.value)

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind, check TLS, start every process and wait until each serves; raises
        :class:`BridgeError` with the reason one cannot (the others stopped again)."""
        cfg = self.config
        if cfg.tls_cert and cfg.tls_key:
            tls.server_context(cfg.tls_cert, cfg.tls_key)  # (a bad certificate fails here, in one sentence)
        self._sock = bind(cfg)
        self.address = self._sock.getsockname()[:2]
        self._stopping.clear()
        self._processes = []
        try:
            for index in range(cfg.processes):  # (one by one: those started are ended if one fails)
                self._processes.append(self._spawn(index))
            for p in self._processes:
                self._wait_started(p)
        except BaseException:
            self._end_all(0.0)
            self._sock.close()
            raise
        self._change_state(ListenerState.LISTENING)
        self.started_at = time.time()
        self._reviver = threading.Thread(target=self._revive, name="listener-processes", daemon=True)
        self._reviver.start()
        log.info("listening on %s in %d processes (pids %s)", self.url, len(self._processes),
                 ", ".join(str(p.proc.pid) for p in self._processes))

    def _spawn(self, index: int) -> _Process:
        proc = subprocess.Popen([sys.executable, "-m", "bridge.web.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, pass_fds=(self._sock.fileno(),), cwd=str(self.home.root))
        assert proc.stdin is not None and proc.stdout is not None
        spec = {"home": str(self.home.root), "index": index, "fd": self._sock.fileno(),
                "session_key": self._session_key.hex(), "config": dataclasses.asdict(self.config)}
        proc.stdin.write(json.dumps(spec).encode() + b"\n")
        proc.stdin.flush()
        process = _Process(index, proc, Pipe(proc.stdout, proc.stdin, f"listener process {index}", self._handle))
        process.pipe.on_note = lambda note: self._noted(process, note)
        process.pipe.on_close = process.started.set  # (a process that died starting: its wait ends)
        process.pipe.start()
        return process

    def _wait_started(self, p: _Process) -> None:
        if not p.started.wait(START_TIMEOUT):
            reason = f"it did not start within {START_TIMEOUT:g}s"
        elif p.failure is not None:
            reason = p.failure
        elif p.pipe.closed:
            reason = f"it exited with status {p.proc.wait()}"
        else:
            return
        raise BridgeError(f"the HTTP listener on {self.url} did not start: {reason}")

    def _noted(self, p: _Process, note: dict[str, Any]) -> None:
        if "log" in note:
            logging.getLogger(str(note["log"])).log(int(note["level"]), "%s", note["message"])
        elif "started" in note:
            p.failure = None if note["started"] else str(note.get("reason"))
            p.started.set()

    def _handle(self, op: str, args: dict[str, Any]) -> Any:
        # A listener process's calls: the supervisor's status, the shared login throttle.
        if op == "status":
            return self.supervisor_status() if self.supervisor_status else None
        if op == "throttle":
            method = args["method"]
            with self._throttle_lock:
                if method == "size":
                    return len(self.throttle)
                if method not in THROTTLE_CALLS:
                    raise ValueError(f"unknown throttle call {method!r}")
                return getattr(self.throttle, method)(*args.get("args", []))
        raise ValueError(f"unknown call {op!r}")

    def _revive(self) -> None:
        # A process that died (a crash, an OOM kill) is started again: the others serve meanwhile.
        while not self._stopping.wait(REVIVE_EVERY):
            for n, p in enumerate(self._processes):
                if p.proc.poll() is None or self._stopping.is_set():
                    continue
                log.error("listener process %d (pid %d) exited with status %s: starting it again",
                          p.index, p.proc.pid, p.proc.returncode)
                p.pipe.close()
                self._carry(p.last)
                p.last = {}
                try:
                    fresh = self._spawn(p.index)
                    self._wait_started(fresh)
                except (BridgeError, OSError) as exc:
                    log.error("%s", exc)
                    continue
                self._processes[n] = fresh
                self.revived += 1

    def _carry(self, last: dict[str, Any]) -> None:
        # A dead process's counts stay in the totals (those since status last asked it are lost).
        for key in SUMMED:
            if key != "pending":
                self._carried[key] = self._carried.get(key, 0) + (last.get(key) or 0)
        for code, n in last.get("by_status", {}).items():
            self._carried["by_status"][code] = self._carried["by_status"].get(code, 0) + n

    def stop(self, timeout: float = DRAIN_TIMEOUT + 5) -> None:
        """Drain every process (each stops accepting, finishes its requests, commits what it
        holds), then close the socket."""
        if self._sock is None:
            return
        self._change_state(ListenerState.STOPPING)
        self._stopping.set()
        if self._reviver is not None:
            self._reviver.join(REVIVE_EVERY + START_TIMEOUT)
        self._end_all(timeout)
        self._sock.close()
        self._sock = None
        self._change_state(ListenerState.STOPPED)
        log.info("HTTP listener stopped")

    def _end_all(self, timeout: float) -> None:
        for p in self._processes:
            if timeout:
                try:
                    p.pipe.call("stop", timeout=2.0)
                except PipeClosed:
                    pass
        deadline = time.monotonic() + timeout
        for p in self._processes:
            try:
                p.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if timeout:
                    log.warning("listener process %d did not finish draining in %gs: killed", p.index, timeout)
                p.proc.kill()
                p.proc.wait()
            p.pipe.close()

    # -- status --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where OMi reaches the listener."""
        return url_of(self.config, self.address)

    def status(self) -> dict[str, Any]:
        """The listener's part of ``ombridge status``: one listener, its processes' figures added
        up (a process that does not answer counts as failed)."""
        seen = []
        for p in list(self._processes):
            try:
                p.last = p.pipe.call("status", timeout=2.0)
                seen.append(p.last)
            except PipeClosed:
                pass
        state = self.state
        if state is ListenerState.LISTENING and len(seen) < len(self._processes):
            state = ListenerState.FAILED
        total: dict[str, Any] = {k: self._carried.get(k, 0) + sum(s.get(k) or 0 for s in seen) for k in SUMMED}
        by_status: dict[str, int] = dict(self._carried["by_status"])
        for s in seen:
            for code, count in s.get("by_status", {}).items():
                by_status[code] = by_status.get(code, 0) + count
        total["events_per_commit"] = round(total["events"] / total["commits"], 1) if total["commits"] else None
        return {**described(self.config, self.address, state), **total,
                "by_status": dict(sorted(by_status.items(), key=lambda kv: int(kv[0]))),
                "processes": len(self._processes), "serving": len(seen),
                "per_process": [s.get("requests") or 0 for s in seen],
                "pids": [p.proc.pid for p in self._processes], "revived": self.revived}

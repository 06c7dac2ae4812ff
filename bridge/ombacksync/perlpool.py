"""PerlPool: ``[ombacksync] children = N`` persistent perl children running the same script.

Each child is a :class:`~bridge.ombacksync.perlhost.PerlHost` of its own: it loads the script,
runs ``Init`` once, keeps its own globals, and restarts with its own backoff. The pool is what
the supervisor starts, stops and restarts, and what ``status`` shows; the backsync lane
(:class:`bridge.delivery.lanes.BacksyncLane`) decides which child runs which Close.

- **One child** (the default) is exactly the single child of the connector's ombacksync: the lane
  pipelines Closes into it and restarts it itself.
- **Several children**: each takes one Close at a time, and a child that faulted is started again
  by :meth:`PerlPool.revive` in a thread of its own, so that its Init never holds up the others.

The pool's state (what ``status`` calls "ombacksync is ...") is the worst of its children's:
``syntax-error`` > ``backoff`` > ``stopped`` > ``starting`` > ``running``. A change of any child is
passed on to ``on_state`` as a change of that state (old and new may be equal: a child came back
while another still waits), so that the supervisor wakes the lane and reports a failed start once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import BridgeError, ScriptSyntaxError
from ..home import Home
from ..model import HostState
from .perlenv import HostSettings
from .perlhost import PerlHost, StateListener

_WORST = (HostState.SYNTAX_ERROR, HostState.BACKOFF, HostState.STOPPED, HostState.STARTING, HostState.RUNNING)

log = logging.getLogger("ombridge.perl")


def worst(states: Iterable[HostState]) -> HostState:
    """The pool's state: the worst of its children's."""
    present = set(states)
    return next(s for s in _WORST if s in present)


class PerlPool:
    """N :class:`PerlHost` children of one script, started, stopped and shown as one ombacksync."""

    def __init__(self, hosts: list[PerlHost], on_state: StateListener | None = None) -> None:
        if not hosts:
            raise ValueError("a pool needs one host at least")
        self.hosts = hosts
        self.on_state = on_state
        self._lock = threading.Lock()
        self._reviving: set[int] = set()  # indexes of children a thread of their own is starting
        self.state = worst(h.state for h in hosts)
        for host in hosts:
            host.on_state = self._changed

    @classmethod
    def create(cls, home: Home, size: int, *, timeout: float, settings: HostSettings,
               on_state: StateListener | None = None, script: Path | None = None,
               clock: Callable[[], float] = time.monotonic) -> PerlPool:
        """``size`` children of the home's script ("ombacksync", or "ombacksync[1]".. with several)."""
        names = ["ombacksync"] if size == 1 else [f"ombacksync[{n}]" for n in range(1, size + 1)]
        return cls([PerlHost(home, script=script, timeout=timeout, settings=settings, clock=clock, name=name)
                    for name in names], on_state)

    @property
    def wide(self) -> bool:
        """Several children: one Close each at a time, restarted in threads of their own."""
        return len(self.hosts) > 1

    # -- what the supervisor and status read ---------------------------------------------------

    @property
    def timeout(self) -> float:
        return self.hosts[0].timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        for host in self.hosts:
            host.timeout = seconds

    @property
    def loaded_checksum(self) -> str | None:
        """The checksum of the script the children loaded (the first running one's)."""
        running = [h.loaded_checksum for h in self.hosts if h.loaded_checksum]
        return running[0] if running else None

    @property
    def pid(self) -> int | None:
        return self.hosts[0].pid

    @property
    def failed_starts(self) -> int:
        return max(h.failed_starts for h in self.hosts)

    def snapshot(self) -> dict[str, Any]:
        """ombacksync as ``status`` shows it: the first child's details, the pool's state, and
        one row per child (``children``)."""
        first = self.hosts[0].snapshot()
        now = time.time()
        children = []
        for n, host in enumerate(self.hosts, 1):
            snap = host.snapshot() if n > 1 else first
            current = host.current()
            children.append({
                "index": n, "name": host.name, "pid": snap["pid"], "state": snap["state"], "closes": host.closes,
                "restarts": snap["restarts"], "last_error": snap["last_error"], "retry_in": snap["retry_in"],
                "current": None if current is None else {
                    "id": current[0] if isinstance(current[0], str) else current[0].decode("utf-8", "replace"),
                    "since": current[1], "seconds": max(0.0, now - current[1])}})
        return {**first, "state": self.state.value, "size": len(self.hosts), "children": children,
                "restarts": sum(c["restarts"] for c in children),
                "last_error": next((c["last_error"] for c in children if c["last_error"]), None),
                "closes": sum(c["closes"] for c in children)}

    def any_running(self) -> bool:
        return any(h.state is HostState.RUNNING for h in self.hosts)

    def check(self) -> str:
        return self.hosts[0].check()

    def ready_at(self) -> float | None:
        """When a Close may be pushed to one child at least (see :meth:`PerlHost.ready_at`)."""
        due = [d for d in (h.ready_at() for h in self.hosts) if d is not None]
        return min(due) if due else None

    def clock(self) -> float:
        return self.hosts[0].clock()

    # -- life ------------------------------------------------------------------------------------

    def _changed(self, old: HostState, new: HostState, reason: str) -> None:
        # A child's state changed (in its own thread): the pool's is the worst of them.
        with self._lock:
            before, self.state = self.state, worst(h.state for h in self.hosts)
            after = self.state
        if self.on_state:
            self.on_state(before, after, reason)

    def _each(self, act: Callable[[PerlHost], None]) -> list[BaseException]:
        """``act`` on every child, in parallel threads with several; the errors raised."""
        if not self.wide:
            try:
                act(self.hosts[0])
            except BridgeError as exc:
                return [exc]
            return []
        errors: list[BaseException] = []

        def run(host: PerlHost) -> None:
            try:
                act(host)
            except BridgeError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(h,), name=f"{h.name} life", daemon=True) for h in self.hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return errors

    def start(self) -> None:
        """Start every child (in parallel); raises the first failure (a syntax error first)."""
        self._raise(self._each(lambda h: h.start()))

    def restart(self) -> None:
        """Check the script once, then restart every child: a refused script keeps all the old ones."""
        self.hosts[0].check()
        self._raise(self._each(lambda h: h.restart(checked=True) if h.state is HostState.RUNNING else h.start()))

    @staticmethod
    def _raise(errors: list[BaseException]) -> None:
        if errors:
            raise next((e for e in errors if isinstance(e, ScriptSyntaxError)), errors[0])

    def stop(self) -> None:
        """Stop every child, each with its grace (in parallel)."""
        self._each(lambda h: h.stop())

    def close_down(self) -> None:
        for host in self.hosts:
            host.close_down()

    def kill(self) -> None:
        for host in self.hosts:
            host.kill()

    # -- one child's restart, off the lane ---------------------------------------------------------

    def usable(self, index: int) -> bool:
        """Child ``index`` may take a Close now (running, not being started again)."""
        return index not in self._reviving and self.hosts[index].serving()

    def needs_start(self, index: int) -> bool:
        """Child ``index`` is not serving and its start is due (or it died while idle)."""
        host = self.hosts[index]
        if index in self._reviving:
            return False
        if host.state is HostState.RUNNING:
            return not host.serving() and not host.in_flight
        due = host.ready_at()
        return due is not None and due <= host.clock()

    def revive(self, index: int) -> None:
        """Start child ``index`` again in a thread of its own (its Init holds up no other child)."""
        with self._lock:
            if index in self._reviving:
                return
            self._reviving.add(index)
        host = self.hosts[index]
        threading.Thread(target=self._revive, args=(index,), name=f"{host.name} start", daemon=True).start()

    def _revive(self, index: int) -> None:
        try:
            self.hosts[index].ensure_running()  # (a failed start is logged and set to backoff there)
        except BridgeError:  # (PerlStartError included)
            pass
        except Exception:  # a start never takes the pool down
            log.exception("%s: the start failed", self.hosts[index].name)
        finally:
            with self._lock:
                self._reviving.discard(index)
            if self.on_state:  # the lane looks again (a child that came back takes Closes)
                self.on_state(self.state, self.state, "")

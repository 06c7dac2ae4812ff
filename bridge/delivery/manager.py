"""The Event Manager: claims due subscriber events and delivers them, forever, losing none.

Two kinds of lane (:mod:`bridge.delivery.lanes`), each a thread with its own SQLite connection:

- action lanes (``workers`` of them): claim one due command/program/web delivery at a time,
  run it, record the attempt;
- the backsync lane: streams due backsync deliveries through the persistent perl child,
  recording each outcome; Closes that never reached the script (the child was down or
  restarting) are released without counting an attempt. While ombacksync waits for an operator
  (``syntax-error``, ``stopped``) it claims nothing: Close deliveries wait, open, for a restart.

A lane thread repeats its step; when a step finds nothing it sleeps until the next delivery is
due, the poll interval passes, or the doorbell rings. Stopping is graceful: the deliveries in
flight are finished, the rest stays open. The manager's state and each lane's are changed in one
guarded place each (:meth:`EventManager._change_state`, :meth:`EventManager._set_lane`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import store
from ..errors import BridgeError, StoreError
from ..eventcore import deliveries
from ..home import Home
from ..model import (
    LANE_MOVES,
    MANAGER_MOVES,
    ActionKind,
    Lane,
    LaneState,
    ManagerState,
    check_transition,
)
from ..ombacksync.perlhost import PerlHost
from ..ombacksync.perlpool import PerlPool
from ..store import Connection, Store
from .actionlanes import Shares, step_actions
from .actions import Performer
from .lanes import BacksyncLane

log = logging.getLogger("ombridge.manager")

DEFAULT_WORKERS = 4  # action lanes
ERROR_FRESH = 120.0  # seconds a lane's error keeps the Event Manager "degraded" in status


def default_share(workers: int) -> int:
    """The action lanes one subscriber may hold by default: half of them (at least one), so that
    a slow destination leaves the other half to everybody else."""
    return max(1, workers // 2)


class EventManager:
    """Delivers subscriber events: action lanes and one backsync lane."""

    def __init__(self, home: Home, store: Store, host: PerlHost | PerlPool | None, *, owner: str, workers: int = DEFAULT_WORKERS,
                 poll: float = 30.0, on_error: Callable[[BaseException], None] | None = None,
                 others: Mapping[str, Performer] | None = None, per_subscriber: int | None = None) -> None:
        self.home = home
        self.store = store  # the process's one Store: each lane's connection comes from it
        self.host = host
        self.others = others or {}  # action kinds a layer above delivers (the daemon's: the sync back to OMi)
        self.owner = owner
        self.workers = workers
        self.shares = Shares(per_subscriber or default_share(workers))
        self.poll = poll
        self.state = ManagerState.STOPPED
        self.delivered = 0
        self.failed_attempts = 0
        self._stopping = threading.Event()
        self._said: dict[str, tuple[str, float]] = {}  # lane -> the store failure it last logged, when
        self.backsync = None if host is None else BacksyncLane(host, owner, count=self._count,
                                                                stopping=self._stopping.is_set)
        self._wakes: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        self._lane_states: dict[str, LaneState] = {}
        self._lock = threading.Lock()  # counters, states
        self._on_error = on_error
        self.last_error: tuple[float, str] | None = None  # (when, what) a lane last failed

    # -- state ---------------------------------------------------------------------------------

    def _change_state(self, new: ManagerState) -> None:
        """The one place the manager's state changes: guarded by :data:`MANAGER_MOVES`, logged."""
        check_transition(MANAGER_MOVES, self.state, new, "the event manager")
        old, self.state = self.state, new
        log.info("event manager: %s -> %s", old.value, new.value)

    def _set_lane(self, name: str, new: LaneState) -> None:
        """The one place a lane's state changes (guarded by :data:`LANE_MOVES`). The last lane
        to stop takes a stopping manager to STOPPED, whoever waits for it or not."""
        with self._lock:
            old = self._lane_states[name]
            if old is new:
                return
            check_transition(LANE_MOVES, old, new, f"lane {name}")
            self._lane_states[name] = new
            # STOPPING -> STOPPED once every lane has ended (a stop that timed out included)
            if self.state is ManagerState.STOPPING and all(s is LaneState.STOPPED for s in self._lane_states.values()):
                self._change_state(ManagerState.STOPPED)

    def _count(self, succeeded: int, failed: int) -> None:
        with self._lock:
            self.delivered += succeeded
            self.failed_attempts += failed

    # -- steps ---------------------------------------------------------------------------------

    def step_actions(self, conn: Connection) -> int:
        """Claim and deliver one due command/program/web delivery; returns how many (0 or 1)."""
        return step_actions(conn, self.owner, str(self.home.root), self._count, self.others, shares=self.shares)

    def step_omi(self, conn: Connection) -> int:
        """Deliver one due sync back to OMi, in its own lane (a late gateway holds no action lane)."""
        return step_actions(conn, self.owner, str(self.home.root), self._count, self.others, lane=Lane.OMI)

    def step_backsync(self, conn: Connection) -> int:
        """One turn of the backsync lane (see :class:`bridge.delivery.lanes.BacksyncLane`)."""
        return self.backsync.step(conn) if self.backsync else 0

    # -- lanes ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lanes (``workers`` action lanes and, with a host, the backsync lane).

        # STOPPED -> RUNNING (a running or stopping manager is not started again)
        """
        lanes: list[tuple[str, Callable[[Connection], int], Lane]] = [
            (f"actions-{n}", self.step_actions, Lane.ACTIONS) for n in range(self.workers)]
        if ActionKind.OMI in self.others:
            lanes.append((Lane.OMI.value, self.step_omi, Lane.OMI))
        if self.backsync is not None:
            lanes.append((Lane.BACKSYNC.value, self.step_backsync, Lane.BACKSYNC))
        with self._lock:
            if self.state is not ManagerState.STOPPED:
                raise BridgeError(f"the event manager is {self.state.value}; it starts only when stopped")
            self._stopping.clear()
            self._wakes = [threading.Event() for _ in lanes]
            self._lane_states = {name: LaneState.IDLE for name, _, _ in lanes}
            self._threads = [threading.Thread(target=self._lane, args=(name, step, lane, wake), name=name, daemon=True)
                             for (name, step, lane), wake in zip(lanes, self._wakes)]
            self._change_state(ManagerState.RUNNING)
        for thread in self._threads:
            thread.start()
        log.info("event manager running: %d action lane(s) (%d at most for one subscriber)%s%s", self.workers,
                 self.shares.limit, ", the OMi lane" if ActionKind.OMI in self.others else "",
                 " and the backsync lane" if self.backsync else "")

    def wake(self) -> None:
        """The doorbell: every lane looks for work now."""
        for wake in self._wakes:
            wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the deliveries in flight; True when every lane has stopped.

        # RUNNING -> STOPPING -> STOPPED (when the last lane ends, even after ``timeout``)
        """
        with self._lock:
            if self.state is ManagerState.RUNNING:
                self._change_state(ManagerState.STOPPING)
        self._stopping.set()
        self.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self.backsync is not None:
            self.backsync.summary.flush()
        return self.state is ManagerState.STOPPED

    def _lane(self, name: str, step: Callable[[Connection], int], lane: Lane,
              wake: threading.Event) -> None:
        try:
            conn = self.store.connect(lane=True)  # acknowledgements without an fsync each: see Store.connect
        except Exception as exc:
            self._lane_failed(name, exc)
            self._set_lane(name, LaneState.STOPPED)
            return
        try:
            while not self._stopping.is_set() or (lane is Lane.BACKSYNC and self._streaming()):
                wake.clear()
                try:
                    self._set_lane(name, LaneState.BUSY)
                    conn, worked = self._step(step, conn)
                    if name in self._said:
                        self._recovered(name)
                    if worked:
                        continue
                    wait = self._idle_wait(conn, lane)
                except Exception as exc:  # a lane never dies: log, pause, go on
                    self._lane_failed(name, exc)
                    if self._stopping.is_set() and lane is Lane.BACKSYNC and self.backsync is not None:
                        self.backsync.give_up(f"stopping while the event core fails: {exc}")  # (not forever)
                    wait = 1.0
                self._set_lane(name, LaneState.IDLE)
                wake.wait(wait)
        finally:
            conn.close()
            self._set_lane(name, LaneState.STOPPED)
            log.info("lane %s stopped", name)

    def _step(self, step: Callable[[Connection], int], conn: Any) -> tuple[Any, int]:
        """One step on a working connection (:meth:`bridge.store.Store.using`: a new one when the
        database restarted, before anything is reported)."""
        return self.store.using(conn, step, lane=True)

    def _streaming(self) -> bool:
        # A stop finishes the stream in flight (its Closes ran or are running: record them).
        return self.backsync is not None and self.backsync.stream is not None

    def _lane_failed(self, name: str, exc: BaseException) -> None:
        if isinstance(exc, (StoreError, *store.unreachable())):  # the database is away: no traceback,
            text = " ".join(str(exc).split())  # and the same sentence once a minute at most
            said, at = self._said.get(name, ("", 0.0))
            if text != said or time.monotonic() - at > 60:
                log.error("%s: %s", name, text)
                self._said[name] = (text, time.monotonic())
        else:
            log.error("%s: unexpected error", name, exc_info=exc)
        self.last_error = (time.time(), f"{name}: {exc}")  # status shows it (a full disk, ...)
        if self._on_error:
            self._on_error(exc)

    def _recovered(self, name: str) -> None:
        # The event core answers this lane again: its outage is no longer the manager's last error.
        del self._said[name]
        log.info("%s: the event core answers again", name)
        if self.last_error and self.last_error[1].startswith(f"{name}: "):
            self.last_error = None

    def _idle_wait(self, conn: Connection, lane: Lane) -> float:
        if lane is Lane.BACKSYNC:
            assert self.backsync is not None
            return self.backsync.wait(conn, self.poll)
        next_at = deliveries.next_due(conn, lane)
        return self.poll if next_at is None else min(self.poll, max(0.0, next_at - store.now(conn)) + 0.001)

    def drain(self, conn: Connection, timeout: float = 60.0) -> int:
        """Deliver in this thread until nothing is due (tests and one-shot runs); returns how many."""
        total = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.step_actions(conn) + self.step_backsync(conn)
            n += self.step_omi(conn) if ActionKind.OMI in self.others else 0
            while self._streaming() and time.monotonic() < deadline:
                self.step_backsync(conn)
            if not n:
                break
            total += n
        return total

    def status(self) -> dict[str, Any]:
        """The Event Manager's part of ``status``."""
        recent = self.last_error if self.last_error and time.time() - self.last_error[0] < ERROR_FRESH else None
        return {"state": self.state.value, "workers": self.workers, "per_subscriber": self.shares.limit,
                "held": {str(k): v for k, v in self.shares.held().items()}, "poll_seconds": self.poll,
                "delivered": self.delivered, "failed_attempts": self.failed_attempts,
                "last_error": recent[1] if recent else None, "last_error_at": recent[0] if recent else None,
                "lanes": [{"name": name, "state": state.value} for name, state in self._lane_states.items()]}

"""The Event Manager: claims due subscriber events and delivers them, forever, losing none.

Two kinds of lane, each a thread with its own SQLite connection:

- action lanes (``workers`` of them): claim one due command/program/web delivery at a time,
  run it, record the attempt;
- the backsync lane: claims due backsync deliveries in batches and pipelines them through
  :meth:`PerlHost.close_many`, recording each outcome; calls that never reached the script (the
  child was down or restarting) are released without counting an attempt. While ombacksync is
  ``syntax-error`` or ``fatal`` it claims nothing: Close deliveries wait, open, for a restart.

A lane is a loop of :meth:`EventManager.step_actions` / :meth:`step_backsync`; when a step finds
nothing it sleeps until the next delivery is due, the poll interval passes, or the doorbell rings.
Stopping is graceful: the delivery in flight is finished, the rest stays open.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from . import deliveries, store
from .actions import ActionResult, perform
from .home import Home
from .names import value_text
from .perlhost import HostState, PerlHost

log = logging.getLogger("ombridge.manager")

BACKSYNC = "backsync"
MAX_BATCH = 2000
RECORD_EVERY = 100  # Closes pipelined between two records of outcomes
BATCH_SECONDS = 0.5  # aim for backsync batches that take about this long


class ManagerState(str, Enum):
    """The Event Manager's state, as ``status`` shows it."""

    STOPPED = "stopped"
    RUNNING = "running"
    STOPPING = "stopping"


class EventManager:
    """Delivers subscriber events: action lanes and one backsync lane."""

    def __init__(self, home: Home, host: PerlHost | None, *, owner: str, workers: int = 2, poll: float = 30.0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.home = home
        self.host = host
        self.owner = owner
        self.workers = workers
        self.poll = poll
        self.state = ManagerState.STOPPED
        self.delivered = 0
        self.failed_attempts = 0
        self._batch = 10  # grows to about BATCH_SECONDS worth of Closes after the first batch
        self._stopping = threading.Event()
        self._wakes: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        self._counter_lock = threading.Lock()
        self._on_error = on_error

    # -- steps -------------------------------------------------------------------------------

    def step_actions(self, conn: sqlite3.Connection) -> int:
        """Claim and deliver one due command/program/web delivery; returns how many (0 or 1)."""
        claims = deliveries.claim(conn, limit=1, exclude_action=BACKSYNC, owner=self.owner)
        if not claims:
            return 0
        c = claims[0]
        result = perform(c.action, c.target, c.event, c.timeout, str(self.home.root))
        status = deliveries.finish(conn, [(c, result)])[0]
        self._count(result.ok)
        log.log(logging.INFO if result.ok else logging.WARNING, "delivery %d (event %d, subscriber %d, attempt %d): %s%s",
                c.id, c.event.id, c.subscriber_id, c.attempt, status, f": {result.error}" if result.error else "")
        return 1

    def backsync_ready(self) -> bool:
        """True when the backsync lane may claim work now."""
        host = self.host
        if host is None or host.state in (HostState.SYNTAX_ERROR, HostState.FATAL, HostState.STARTING):
            return False
        if host.state is HostState.BACKOFF and host.retry_at is not None:
            return host.clock() >= host.retry_at
        return True

    def step_backsync(self, conn: sqlite3.Connection) -> int:
        """Claim a batch of due backsync deliveries and close them through the perl child.

        The batch is pipelined in chunks of :data:`RECORD_EVERY`, each chunk's outcomes recorded
        before the next is sent: a crash repeats at most one chunk's Closes (at-least-once).
        """
        if not self.backsync_ready():
            return 0
        assert self.host is not None
        claims = deliveries.claim(conn, limit=self._batch, action=BACKSYNC, owner=self.owner)
        if not claims:
            self.host.ensure_running()  # notice a child that died while idle; restart after backoff
            return 0
        started = time.time()
        attempted = failed = released = 0
        first_error = None
        size = min(RECORD_EVERY, self._batch)
        for n in range(0, len(claims), size):
            chunk = claims[n:n + size]
            if released or self._stopping.is_set():
                # The child went down earlier in this batch, or we are stopping: give the rest
                # back untouched (open, no attempt counted).
                deliveries.release(conn, chunk)
                released += len(chunk)
                continue
            done, given_back = self._close_chunk(chunk)
            deliveries.finish(conn, done)
            if given_back:
                deliveries.release(conn, given_back)
            for _, result in done:
                self._count(result.ok)
                if not result.ok:
                    failed += 1
                    first_error = first_error or result.error
            attempted += len(done)
            released += len(given_back)
        ended = time.time()
        if attempted and ended > started:
            # Size the next batch so that it takes about BATCH_SECONDS (a slow script gets small
            # batches, so a stop or a restart never waits long behind one).
            self._batch = max(1, min(MAX_BATCH, int(attempted / (ended - started) * BATCH_SECONDS)))
        log.info("backsync: %d closed, %d failed, %d released%s", attempted - failed, failed, released,
                 f" (first error: {first_error})" if first_error else "")
        return len(claims)

    def _close_chunk(self, chunk: list[deliveries.Claimed]
                     ) -> tuple[list[tuple[deliveries.Claimed, ActionResult]], list[deliveries.Claimed]]:
        """Close one chunk: (attempted claims with their results, claims never attempted)."""
        assert self.host is not None
        started = time.time()
        done: list[tuple[deliveries.Claimed, ActionResult]] = []
        usable = []
        for c in chunk:
            event_id = value_text(c.event.key.get("ID", ""))
            if event_id == "":
                done.append((c, ActionResult(False, started, started, error="the event has no ID to close")))
            else:
                usable.append((c, event_id))
        outcomes = self.host.close_many([i for _, i in usable]) if usable else []
        ended = time.time()
        given_back = []
        for (c, _), outcome in zip(usable, outcomes):
            if outcome.attempted:
                done.append((c, ActionResult(outcome.ok, started, ended, None, "", outcome.error)))
            else:
                given_back.append(c)
        return done, given_back

    def _count(self, ok: bool) -> None:
        with self._counter_lock:
            if ok:
                self.delivered += 1
            else:
                self.failed_attempts += 1

    # -- lanes -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lanes (``workers`` action lanes and, with a host, the backsync lane)."""
        if self.state is ManagerState.RUNNING:
            return
        self._stopping.clear()
        lanes: list[tuple[str, Callable[[sqlite3.Connection], int], dict[str, Any]]] = [
            (f"actions-{n}", self.step_actions, {"exclude_action": BACKSYNC}) for n in range(self.workers)]
        if self.host is not None:
            lanes.append(("backsync", self.step_backsync, {"action": BACKSYNC}))
        self._wakes = []
        self._threads = []
        for name, step, due in lanes:
            wake = threading.Event()
            self._wakes.append(wake)
            thread = threading.Thread(target=self._lane, args=(name, step, due, wake), name=name, daemon=True)
            self._threads.append(thread)
        self.state = ManagerState.RUNNING
        for thread in self._threads:
            thread.start()
        log.info("event manager running: %d action lane(s)%s", self.workers, " and the backsync lane" if self.host else "")

    def wake(self) -> None:
        """The doorbell: every lane looks for work now."""
        for wake in self._wakes:
            wake.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the deliveries in flight; True when every lane has stopped."""
        if self.state is ManagerState.STOPPED:
            return True
        self.state = ManagerState.STOPPING
        self._stopping.set()
        self.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        stopped = not any(t.is_alive() for t in self._threads)
        if stopped:
            self.state = ManagerState.STOPPED
            log.info("event manager stopped")
        return stopped

    def _lane(self, name: str, step: Callable[[sqlite3.Connection], int], due: dict[str, Any],
              wake: threading.Event) -> None:
        conn = store.connect(self.home, durable=False)
        try:
            while not self._stopping.is_set():
                wake.clear()
                try:
                    if step(conn):
                        continue
                    wait = self._idle_wait(conn, due)
                except Exception as exc:  # a lane never dies: log, pause, go on
                    log.exception("%s: unexpected error", name)
                    if self._on_error:
                        self._on_error(exc)
                    wait = 1.0
                wake.wait(wait)
        finally:
            conn.close()

    def _idle_wait(self, conn: sqlite3.Connection, due: dict[str, Any]) -> float:
        wait = self.poll
        if due.get("action") == BACKSYNC:
            assert self.host is not None
            if not self.backsync_ready():
                if self.host.state is HostState.BACKOFF and self.host.retry_at is not None:
                    return max(0.0, min(wait, self.host.retry_at - self.host.clock()))
                return wait  # waits for an operator: a restart wakes the lane
            wait = min(wait, 2.0)  # look at the child now and then, even with nothing to close
        next_at = deliveries.next_due(conn, **due)
        if next_at is not None:
            wait = min(wait, max(0.0, next_at - time.time()) + 0.001)
        return wait

    def drain(self, conn: sqlite3.Connection, timeout: float = 60.0) -> int:
        """Deliver in this thread until nothing is due (tests and one-shot runs); returns how many."""
        total = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.step_actions(conn) + (self.step_backsync(conn) if self.host else 0)
            if not n:
                break
            total += n
        return total

    def status(self) -> dict[str, Any]:
        """The Event Manager's part of ``status``."""
        return {"state": self.state.value, "workers": self.workers, "poll_seconds": self.poll,
                "delivered": self.delivered, "failed_attempts": self.failed_attempts}

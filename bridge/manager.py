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
from typing import Any

from . import deliveries, store
from .actions import perform
from .errors import BridgeError
from .events import stored_field
from .home import Home
from .model import Attempt, HostState, Lane, LaneState, ManagerState, Settlement
from .names import value_text
from .perlhost import PerlHost

log = logging.getLogger("ombridge.manager")

MAX_BATCH = 10_000  # Closes one step may claim (a step takes about BATCH_SECONDS)
RECORD_EVERY = 250  # Closes between two records of outcomes
WINDOW = 2 * RECORD_EVERY  # Closes perl may run ahead of the last record: what one crash may repeat
BATCH_SECONDS = 0.5  # aim for backsync batches that take about this long
ERROR_FRESH = 120.0  # seconds a lane's error keeps the Event Manager "degraded" in status
SUMMARY_EVERY = 10.0  # seconds between two log lines of Closes that went well


class _Tally:
    """What one backsync batch did, for its log line."""

    def __init__(self) -> None:
        self.attempted = 0
        self.failed = 0
        self.first_error: str | None = None


class _Summary:
    """Closes that went well, logged as one line per :data:`SUMMARY_EVERY` seconds instead of one
    per batch (HTTP closes come in batches of a few: hundreds of lines a second otherwise)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.closed = 0
        self.batches = 0
        self.since = clock()

    def add(self, closed: int) -> None:
        self.closed += closed
        self.batches += 1
        self.tick()

    def tick(self) -> None:
        """Log what was closed when the last line is old enough."""
        if self.clock() - self.since >= SUMMARY_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.closed:
            log.info("backsync: %d closed in %d batch(es) over %.0f s", self.closed, self.batches,
                     self.clock() - self.since)
        self.closed = self.batches = 0
        self.since = self.clock()


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
        self._summary = _Summary()
        self._batch = 10  # grows to about BATCH_SECONDS worth of Closes after the first batch
        self._stopping = threading.Event()
        self._wakes: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        self._lane_states: dict[str, LaneState] = {}
        self._counter_lock = threading.Lock()
        self._on_error = on_error
        self.last_error: tuple[float, str] | None = None  # (when, what) a lane last failed

    # -- steps -------------------------------------------------------------------------------

    def step_actions(self, conn: sqlite3.Connection) -> int:
        """Claim and deliver one due command/program/web delivery; returns how many (0 or 1)."""
        claims = deliveries.claim(conn, limit=1, lane=Lane.ACTIONS, owner=self.owner)
        if not claims:
            return 0
        c = claims[0]
        result = perform(c.action, c.target, c.event, c.timeout, str(self.home.root), c.headers)
        settled = deliveries.finish(conn, [(c, result)])[0]
        self._count(int(result.ok), int(not result.ok))
        self._log_settled(c, result, settled)
        return 1

    @staticmethod
    def _log_settled(c: deliveries.Claimed, result: Attempt, settled: Settlement) -> None:
        if result.ok:
            log.info("delivery %d (event %d, subscriber %d, attempt %d): %s", c.id, c.event.id, c.subscriber_id,
                     c.attempt, settled.value)
            return
        level = logging.ERROR if settled is Settlement.FAILED else logging.WARNING
        close_id = f", ID {value_text(c.event.key['ID'])!r}" if "ID" in c.event.key else ""
        log.log(level, "delivery %d (event %d%s, subscriber %d, attempt %d) %s: %s", c.id, c.event.id, close_id,
                c.subscriber_id, c.attempt,
                "failed, retries used up" if settled is Settlement.FAILED else "failed, will retry"
                if settled is Settlement.RETRY else settled.value, result.error)

    def backsync_ready(self) -> bool:
        """True when the backsync lane may claim work now."""
        host = self.host
        if host is None or host.state in (HostState.STOPPED, HostState.SYNTAX_ERROR, HostState.FATAL,
                                          HostState.STARTING):
            return False
        if host.state is HostState.BACKOFF and host.retry_at is not None:
            return host.clock() >= host.retry_at
        return True

    def step_backsync(self, conn: sqlite3.Connection) -> int:
        """Claim due backsync deliveries and close them through the perl child, as a stream.

        Outcomes are recorded :data:`RECORD_EVERY` at a time as they arrive, and each record
        claims enough more to keep perl :data:`WINDOW` Closes ahead of the outcomes recorded
        (close_many's window: twice ``every``), so that neither waits for the other; a crash
        repeats at most that many Closes (at-least-once). A step claims more for
        :data:`BATCH_SECONDS` at most (and about that much work), so a stop or a restart never
        waits long behind one. Returns how many it claimed.
        """
        if not self.backsync_ready():
            return 0
        assert self.host is not None
        started = time.time()
        tally = _Tally()
        budget = self._batch
        usable: list[deliveries.Claimed] = []  # claimed, with an ID to close, in the order sent
        claimed = recorded = 0

        def take(claims: list[deliveries.Claimed]) -> list[str]:
            """The IDs to close of new ``claims`` (one without an ID fails at once)."""
            nonlocal claimed
            claimed += len(claims)
            close_ids, without_id = [], []
            for c in claims:
                close_id = stored_field(c.event.key_json, "ID")  # the key's ID field, not the event's row id
                if close_id == "":
                    now = time.time()
                    without_id.append((c, Attempt(False, now, now, error="the event has no ID to close")))
                else:
                    usable.append(c)
                    close_ids.append(close_id)
            if without_id:
                self._record(conn, without_id, tally)
            return close_ids

        def record(batch: list[Attempt]) -> list[str] | None:
            """Record the outcomes of ``batch`` and claim the next Closes, in one transaction;
            None (nothing done) when that would wait for the write lock while perl still works."""
            nonlocal recorded
            done = list(zip(usable[recorded:recorded + len(batch)], batch))
            # Claim enough to keep perl a full window ahead of the records: it then has work while
            # the next record is made (topping up only what was recorded would let it run dry).
            # Only for BATCH_SECONDS, and not once stopping: a step stays short, and never outlives
            # its claims' leases (a slow perl would have the lane claim its own Closes again).
            wanted = recorded + len(batch) + WINDOW - len(usable)
            if self._stopping.is_set() or time.time() > started + BATCH_SECONDS:
                wanted = 0
            try:
                # A sender may hold the lock for tens of milliseconds: wait for it only once perl
                # has answered all it may run ahead (the window), else the next replies retry.
                settled, claims = deliveries.finish_and_claim(
                    conn, done, limit=max(0, min(wanted, budget - claimed)), lane=Lane.BACKSYNC, owner=self.owner,
                    wait=len(batch) >= WINDOW)
            except store.Busy:
                return None
            recorded += len(batch)
            self._tally(done, settled, tally)
            return take(claims)

        close_ids = take(deliveries.claim(conn, limit=min(WINDOW, budget), lane=Lane.BACKSYNC,
                                          owner=self.owner))
        if not claimed:
            self.host.ensure_running()  # notice a child that died while idle; restart after backoff
            self._summary.tick()  # an idle lane looks every 2 s at most (see _idle_wait)
            return 0
        outcomes = self.host.close_many(close_ids, progress=record, every=RECORD_EVERY) if close_ids else []
        rest = list(zip(usable[recorded:], outcomes[recorded:]))
        self._record(conn, [(c, o) for c, o in rest if o.attempted], tally)
        given_back = [c for c, o in rest if not o.attempted]
        if given_back:
            deliveries.release(conn, given_back)  # never reached the script: no attempt counted
        ended = time.time()
        if tally.attempted and ended > started:
            self._batch = max(1, min(MAX_BATCH, int(tally.attempted / (ended - started) * BATCH_SECONDS)))
        if tally.failed or given_back:
            self._summary.flush()
            log.info("backsync: %d closed, %d failed, %d released%s", tally.attempted - tally.failed, tally.failed,
                     len(given_back), f" (first error: {tally.first_error})" if tally.first_error else "")
        else:
            self._summary.add(tally.attempted)
        return claimed

    def _record(self, conn: sqlite3.Connection, done: list[tuple[deliveries.Claimed, Attempt]], tally: _Tally) -> None:
        self._tally(done, deliveries.finish(conn, done), tally)

    def _tally(self, done: list[tuple[deliveries.Claimed, Attempt]], settled: list[Settlement], tally: _Tally) -> None:
        failed = 0
        for (c, result), settlement in zip(done, settled):
            if not result.ok:
                failed += 1
                tally.first_error = tally.first_error or result.error
                self._log_settled(c, result, settlement)
        tally.attempted += len(done)
        tally.failed += failed
        self._count(len(done) - failed, failed)

    def _count(self, succeeded: int, failed: int) -> None:
        with self._counter_lock:
            self.delivered += succeeded
            self.failed_attempts += failed

    # -- lanes -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lanes (``workers`` action lanes and, with a host, the backsync lane).

        # STOPPED -> RUNNING (a running or stopping manager is not started again)
        """
        if self.state is not ManagerState.STOPPED:
            raise BridgeError(f"the event manager is {self.state.value}; it starts only when stopped")
        self._stopping.clear()
        lanes: list[tuple[str, Callable[[sqlite3.Connection], int], Lane]] = [
            (f"actions-{n}", self.step_actions, Lane.ACTIONS) for n in range(self.workers)]
        if self.host is not None:
            lanes.append((Lane.BACKSYNC.value, self.step_backsync, Lane.BACKSYNC))
        self._wakes = []
        self._threads = []
        self._lane_states = {name: LaneState.IDLE for name, _, _ in lanes}
        for name, step, lane in lanes:
            wake = threading.Event()
            self._wakes.append(wake)
            thread = threading.Thread(target=self._lane, args=(name, step, lane, wake), name=name, daemon=True)
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
        self._summary.flush()
        if stopped:
            self.state = ManagerState.STOPPED
            log.info("event manager stopped")
        return stopped

    def _lane(self, name: str, step: Callable[[sqlite3.Connection], int], lane: Lane,
              wake: threading.Event) -> None:
        conn = store.connect(self.home, lane=True)  # acknowledgements without an fsync each: see store.connect
        try:
            while not self._stopping.is_set():
                wake.clear()
                try:
                    self._lane_states[name] = LaneState.BUSY
                    if step(conn):
                        continue
                    wait = self._idle_wait(conn, lane)
                except Exception as exc:  # a lane never dies: log, pause, go on
                    log.exception("%s: unexpected error", name)
                    self.last_error = (time.time(), f"{name}: {exc}")  # status shows it (a full disk, ...)
                    if self._on_error:
                        self._on_error(exc)
                    wait = 1.0
                self._lane_states[name] = LaneState.IDLE
                wake.wait(wait)
        finally:
            self._lane_states[name] = LaneState.STOPPED
            conn.close()

    def _idle_wait(self, conn: sqlite3.Connection, lane: Lane) -> float:
        wait = self.poll
        if lane is Lane.BACKSYNC:
            assert self.host is not None
            if not self.backsync_ready():
                if self.host.state is HostState.BACKOFF and self.host.retry_at is not None:
                    return max(0.0, min(wait, self.host.retry_at - self.host.clock()))
                return wait  # waits for an operator: a restart wakes the lane
            wait = min(wait, 2.0)  # look at the child now and then, even with nothing to close
        next_at = deliveries.next_due(conn, lane)
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
        recent = self.last_error if self.last_error and time.time() - self.last_error[0] < ERROR_FRESH else None
        return {"state": self.state.value, "workers": self.workers, "poll_seconds": self.poll,
                "delivered": self.delivered, "failed_attempts": self.failed_attempts,
                "last_error": recent[1] if recent else None, "last_error_at": recent[0] if recent else None,
                "lanes": [{"name": name, "state": state.value} for name, state in self._lane_states.items()]}

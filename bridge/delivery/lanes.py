"""The Event Manager's two kinds of lane, each one step at a time (:mod:`bridge.delivery.manager` runs them).

- :func:`step_actions` claims one due command/program/web delivery, runs it, records the attempt.
- :class:`BacksyncLane` streams Closes through the persistent perl child. It owns every decision
  of the stream: when to claim, when to push, when to record and when to wait; the perl host
  (:meth:`PerlHost.push` / :meth:`PerlHost.poll`) only carries requests and replies.

One backsync stream, step by step (:meth:`BacksyncLane.step` does one of these and returns)::

    no stream:  ombacksync not ready (ready_at)      -> nothing; the lane sleeps until it is
                claim up to WINDOW due Closes         -> none: idle (a dead child is noticed)
                                                      -> push their IDs: a stream begins
    streaming:  poll the host for outcomes            -> outcomes wait to be recorded
                RECORD_EVERY outcomes, or perl idle   -> record them and claim the next, in one
                                                         transaction; top up to WINDOW in flight
                another writer holds the lock         -> declined while perl still has work: the
                                                         outcomes wait for the next turn
                nothing in flight, nothing to record  -> the stream ends

Perl never runs more than :data:`WINDOW` Closes ahead of the last record: a crash repeats at most
that many (at-least-once). A stream tops up for :data:`BATCH_SECONDS` at most (and not once
stopping), so a stop or a restart never waits long behind one, and a slow perl never outlives
its claims' leases.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .. import store
from ..eventcore import deliveries
from ..eventcore.events import stored_field
from ..model import Attempt, Lane, Settlement
from ..names import value_text
from ..store import Connection
from .actions import Performer, perform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..ombacksync.perlhost import PerlHost

log = logging.getLogger("ombridge.manager")

MAX_BATCH = 10_000  # Closes one stream may claim (a stream takes about BATCH_SECONDS)
RECORD_EVERY = 250  # outcomes between two records
WINDOW = 2 * RECORD_EVERY  # Closes perl may run ahead of the last record: what one crash may repeat
BATCH_SECONDS = 0.5  # a stream tops up for this long at most
POLL_SLICE = 0.1  # seconds one step waits for outcomes (a stop is seen between two)
SUMMARY_EVERY = 10.0  # seconds between two log lines of Closes that went well

Counter = Callable[[int, int], None]  # (succeeded, failed)


def log_settled(c: deliveries.Claimed, result: Attempt, settled: Settlement) -> None:
    """One log line for one recorded attempt (a line per success on the action lanes only)."""
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


def step_actions(conn: Connection, owner: str, cwd: str, count: Counter,
                 others: Mapping[str, Performer] | None = None) -> int:
    """Claim and deliver one due command/program/web (or ``others``') delivery; returns how many (0 or 1)."""
    claims = deliveries.claim(conn, limit=1, lane=Lane.ACTIONS, owner=owner)
    if not claims:
        return 0
    c = claims[0]
    result = perform(c.action, c.target, c.event, c.timeout, cwd, c.headers, others)
    settled = deliveries.finish(conn, [(c, result)])[0]
    count(int(result.ok), int(not result.ok))
    log_settled(c, result, settled)
    return 1


class _Summary:
    """Closes that went well, logged as one line per :data:`SUMMARY_EVERY` seconds instead of one
    per stream (HTTP closes come in streams of a few: hundreds of lines a second otherwise)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.closed = self.streams = 0
        self.since = clock()

    def add(self, closed: int) -> None:
        self.closed += closed
        self.streams += 1
        self.tick()

    def tick(self) -> None:
        """Log what was closed when the last line is old enough."""
        if self.clock() - self.since >= SUMMARY_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.closed:
            log.info("backsync: %d closed in %d batch(es) over %.0f s", self.closed, self.streams,
                     self.clock() - self.since)
        self.closed = self.streams = 0
        self.since = self.clock()


class _Stream:
    """One stream of Closes: what is in flight in perl, what came back and waits to be recorded."""

    def __init__(self, started: float, budget: int) -> None:
        self.started = started
        self.budget = budget  # Closes this stream may claim
        self.claimed = 0
        self.topping = True  # still claims more as it records
        self.in_flight: deque[deliveries.Claimed] = deque()  # pushed, in order
        self.outcomes: list[tuple[deliveries.Claimed, Attempt]] = []  # back from perl, not recorded
        self.given_back: list[deliveries.Claimed] = []  # never reached the script
        self.attempted = self.failed = 0
        self.first_error: str | None = None


class BacksyncLane:
    """The backsync lane: one loop that claims Closes, pushes them to the perl host and records
    what came back (see the module's docstring for one stream, step by step)."""

    def __init__(self, host: PerlHost, owner: str, *, count: Counter, stopping: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.owner = owner
        self.count = count
        self.stopping = stopping
        self.clock = clock  # wall clock (the store's due times); the host keeps its own for timeouts
        self.summary = _Summary(clock)
        self.batch = 10  # what a stream claims: grows to about BATCH_SECONDS worth after the first
        self.stream: _Stream | None = None
        self.orphans: list[deliveries.Claimed] = []  # claims of a stream a failure ended, not yet due again

    def wait(self, conn: Connection, poll: float) -> float:
        """Seconds the lane may sleep when a step did nothing (the doorbell cuts it short)."""
        due = self.host.ready_at()
        if due is None:
            return poll  # waits for an operator or a start in progress: a state change wakes the lane
        if due > self.host.clock():
            return max(0.0, min(poll, due - self.host.clock()))
        wait = min(poll, 2.0)  # look at the child now and then, even with nothing to close
        next_at = deliveries.next_due(conn, Lane.BACKSYNC)
        if next_at is not None:
            wait = min(wait, max(0.0, next_at - store.now(conn)) + 0.001)  # (due times: the store's clock)
        return wait

    def step(self, conn: Connection) -> int:
        """One turn: begin a stream, or move the current one on. Returns non-zero while busy.

        When the event core fails (the database away, a full disk) the stream holds what ran,
        claims nothing more, and records it at a later turn once the store answers: the perl
        child and its globals are kept through an outage. Any other failure (or a store failure
        while stopping) ends the stream (:meth:`give_up`).
        """
        try:
            if self.orphans:
                deliveries.due_again(conn, self.orphans)
                self.orphans = []
            return self._advance(conn) if self.stream else self._begin(conn)
        except BaseException as exc:
            if self.stream is not None:
                if isinstance(exc, store.failures()) and not self.stopping():
                    self.stream.topping = False  # held: recorded when the store answers again
                else:
                    self.give_up(str(exc))
            raise

    def give_up(self, reason: str) -> None:
        """End the stream without recording it: its claims are made due again by the next turn
        that reaches the store (attempts counted: they may have run), or come back when their
        leases end. The perl child is killed only while replies are still to come, so that none
        is ever taken for another Close's."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        self.orphans += [*stream.in_flight, *(c for c, _ in stream.outcomes), *stream.given_back]
        if stream.in_flight:
            self.host.abandon(reason)

    def _begin(self, conn: Connection) -> int:
        due = self.host.ready_at()
        if due is None or due > self.host.clock():
            return 0
        stream = _Stream(self.clock(), self.batch)
        self.stream = stream
        self._push(conn, deliveries.claim(conn, limit=min(WINDOW, stream.budget), lane=Lane.BACKSYNC,
                                          owner=self.owner))
        if not stream.claimed:
            self.stream = None
            self.host.ensure_running()  # notice a child that died while idle; restart after backoff
            self.summary.tick()  # an idle lane looks every 2 s at most (see wait)
            return 0
        return stream.claimed

    def _push(self, conn: Connection, claims: list[deliveries.Claimed]) -> None:
        """Push the IDs of new ``claims`` to perl (a claim without an ID fails at once)."""
        stream = self.stream
        assert stream is not None
        stream.claimed += len(claims)
        ids, without_id = [], []
        for c in claims:
            close_id = stored_field(c.event.key_json, "ID")  # the key's ID field, not the event's row id
            if close_id == "":
                now = self.clock()
                without_id.append((c, Attempt(False, now, now, error="the event has no ID to close")))
            else:
                stream.in_flight.append(c)
                ids.append(close_id)
        if without_id:
            self._settle(without_id, deliveries.finish(conn, without_id))
        if ids:
            self._take(self.host.push(ids))

    def _take(self, outcomes: list[Attempt]) -> None:
        """Pair outcomes (in push order) with their claims; those never sent are given back."""
        stream = self.stream
        assert stream is not None
        for outcome in outcomes:
            claim = stream.in_flight.popleft()
            if outcome.attempted:
                stream.outcomes.append((claim, outcome))
            else:
                stream.given_back.append(claim)
                stream.topping = False  # ombacksync is down: claim nothing more now

    def _advance(self, conn: Connection) -> int:
        stream = self.stream
        assert stream is not None
        if stream.in_flight:
            self._take(self.host.poll(POLL_SLICE))
        if stream.topping and (self.stopping() or self.clock() > stream.started + BATCH_SECONDS
                               or stream.claimed >= stream.budget):
            stream.topping = False
        perl_waits = not stream.in_flight
        if stream.outcomes and (len(stream.outcomes) >= RECORD_EVERY or perl_waits):
            self._record(conn, wait=perl_waits)
        if not stream.in_flight and not stream.outcomes:
            self._end(conn)
        return 1

    def _record(self, conn: Connection, *, wait: bool) -> None:
        """Record the outcomes and claim enough more to keep perl a full window ahead, in one
        transaction. While another writer holds the lock and perl still has work, decline (the
        outcomes are offered again on a later turn): the lane waits for the lock only when perl does."""
        stream = self.stream
        assert stream is not None
        want = WINDOW - len(stream.in_flight) if stream.topping else 0
        try:
            settled, claims = deliveries.finish_and_claim(
                conn, stream.outcomes, limit=max(0, min(want, stream.budget - stream.claimed)), lane=Lane.BACKSYNC,
                owner=self.owner, wait=wait)
        except store.Busy:
            return
        done, stream.outcomes = stream.outcomes, []
        self._settle(done, settled)
        self._push(conn, claims)

    def _settle(self, done: list[tuple[deliveries.Claimed, Attempt]], settled: list[Settlement]) -> None:
        stream = self.stream
        assert stream is not None
        failed = 0
        for (c, result), settlement in zip(done, settled):
            if not result.ok:
                failed += 1
                stream.first_error = stream.first_error or result.error
                log_settled(c, result, settlement)
        stream.attempted += len(done)
        stream.failed += failed
        self.count(len(done) - failed, failed)

    def _end(self, conn: Connection) -> None:
        stream = self.stream
        assert stream is not None
        self.stream = None
        if stream.given_back:
            deliveries.release(conn, stream.given_back)  # never reached the script: no attempt counted
        took = self.clock() - stream.started
        if stream.attempted and took > 0:
            self.batch = max(1, min(MAX_BATCH, int(stream.attempted / took * BATCH_SECONDS)))
        if stream.failed or stream.given_back:
            self.summary.flush()
            log.info("backsync: %d closed, %d failed, %d released%s", stream.attempted - stream.failed,
                     stream.failed, len(stream.given_back),
                     f" (first error: {stream.first_error})" if stream.first_error else "")
        else:
            self.summary.add(stream.attempted)

    def status(self) -> dict[str, Any]:
        """What the lane is doing, for tests and ``status``."""
        stream = self.stream
        return {"streaming": stream is not None, "in_flight": len(stream.in_flight) if stream else 0}

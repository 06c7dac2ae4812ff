"""The backsync lane, one step at a time (:mod:`bridge.delivery.manager` runs it; the action
lanes' step is :mod:`bridge.delivery.actionlanes`).

:class:`BacksyncLane` streams Closes through the persistent perl children. It owns every decision
of the stream: when to claim, which child takes which Close, when to push, when to record and
when to wait; the perl hosts (:meth:`PerlHost.push` / :meth:`PerlHost.poll`) only carry requests
and replies.

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
import select
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import store
from ..eventcore import deliveries
from ..eventcore.events import stored_field
from ..model import Attempt, Lane, Settlement
from ..ombacksync.perlpool import PerlPool
from ..store import Connection
from .actionlanes import Counter, log_settled

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..ombacksync.perlhost import PerlHost

log = logging.getLogger("ombridge.manager")

MAX_BATCH = 10_000  # Closes one stream may claim (a stream takes about BATCH_SECONDS)
RECORD_EVERY = 250  # outcomes between two records
WINDOW = 2 * RECORD_EVERY  # Closes perl may run ahead of the last record: what one crash may repeat
BATCH_SECONDS = 0.5  # a stream tops up for this long at most
QUEUE_SECONDS = 0.005  # with several children: the work one child may hold queued behind its Close
PREFETCH_SECONDS = 0.1  # with several children: Closes claimed ahead, in seconds of their rate
REVIVE_EVERY = 0.5  # with several children: seconds between two looks for a child to start again mid-stream
LOOK_EVERY = 0.05  # with several children: seconds between two looks for new Closes while a child has room
RECORD_SECONDS = 0.25  # with several children, the oldest outcome waits this long for its record at most
POLL_SLICE = 0.1  # seconds one step waits for outcomes (a stop is seen between two)
SUMMARY_EVERY = 10.0  # seconds between two log lines of Closes that went well
HEAD_EVERY = 1.0  # seconds a stream looks for Closes after those it claimed before it looks from the head again

class _Summary:
    """Closes that went well, logged as one line per :data:`SUMMARY_EVERY` seconds instead of one
    per stream (HTTP closes come in streams of a few: hundreds of lines a second otherwise)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.closed = self.streams = 0
        self.since = clock()

    def add(self, closed: int, streams: int = 1) -> None:
        self.closed += closed
        self.streams += streams
        self.tick()

    def tick(self) -> None:
        """Log what was closed when the last line is old enough."""
        if self.clock() - self.since >= SUMMARY_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.closed:
            log.info("backsync: %d closed%s over %.0f s", self.closed,
                     f" in {self.streams} batch(es)" if self.streams else "", self.clock() - self.since)
        self.closed = self.streams = 0
        self.since = self.clock()


class _Stream:
    """One stream of Closes: what waits for a child, what is in flight in each child, what came
    back and waits to be recorded."""

    def __init__(self, started: float, budget: int, children: int) -> None:
        self.started = started
        self.budget = budget  # Closes this stream may claim
        self.claimed = 0
        self.topping = True  # still claims more as it records
        self.waiting: deque[tuple[deliveries.Claimed, str]] = deque()  # claimed, for the next free child
        # pushed to each child, in order, with the ID each was pushed as
        self.in_flight: list[deque[tuple[deliveries.Claimed, str]]] = [deque() for _ in range(children)]
        self.running: dict[str, list[int]] = {}  # ID -> [its child, its Closes in flight there]
        self.outcomes: list[tuple[deliveries.Claimed, Attempt]] = []  # back from perl, not recorded
        self.first_outcome_at = 0.0  # when the oldest of them came back
        self.look_at = 0.0  # with several children: when to look for new Closes next (see _widen)
        self.given_back: list[deliveries.Claimed] = []  # never reached the script
        self.attempted = self.failed = 0
        self.first_error: str | None = None

    def flying(self) -> int:
        return sum(len(q) for q in self.in_flight)

    def ran(self, close_id: str) -> None:
        """One Close of ``close_id`` is no longer in its child."""
        held = self.running.get(close_id)
        if held:
            held[1] -= 1
            if not held[1]:
                del self.running[close_id]

    def held(self) -> list[deliveries.Claimed]:
        """Every claim the stream holds and has not recorded."""
        return [*(c for q in self.in_flight for c, _ in q), *(c for c, _ in self.outcomes), *self.given_back,
                *(c for c, _ in self.waiting)]


class BacksyncLane:
    """The backsync lane: one loop that claims Closes, pushes them to the perl children and
    records what came back (see the module's docstring for one stream, step by step)."""

    def __init__(self, host: PerlHost | PerlPool, owner: str, *, count: Counter, stopping: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = host if isinstance(host, PerlPool) else None
        self.hosts: list[PerlHost] = self.pool.hosts if self.pool else [host]  # type: ignore[list-item]
        self.host = self.hosts[0]
        self.wide = self.pool is not None and self.pool.wide
        self.call_seconds = 1.0  # with several children: a Close's time, on average lately (sets the depth)
        self._revive_at = 0.0  # with several children: when to look for one to start again (see _widen)
        self._swept_at = 0.0  # with several children: when each busy one was last polled (see _poll)
        self.rate = 0.0  # with several children: Closes a second, the last stream's (sets the prefetch)
        self.owner = owner
        self.count = count
        self.stopping = stopping
        self.clock = clock  # wall clock (the store's due times); the host keeps its own for timeouts
        self.summary = _Summary(clock)
        # What a stream claims: with one child about BATCH_SECONDS worth; with several, no bound
        # (a stream then runs until nothing is left or the lane stops; each child holds one Close).
        self.batch = 1 << 62 if self.wide else 10
        self.stream: _Stream | None = None
        self.orphans: list[deliveries.Claimed] = []  # claims of a stream a failure ended, not yet due again
        # The place in the queue this lane's claims reached (due, id), and when it last looked from
        # the head: its claims in flight stay at the head (see deliveries._of_lane).
        self.reached: tuple[float, int] | None = None
        self._head_at = 0.0

    def _ready_at(self) -> float | None:
        return self.pool.ready_at() if self.pool else self.host.ready_at()

    def wait(self, conn: Connection, poll: float) -> float:
        """Seconds the lane may sleep when a step did nothing (the doorbell cuts it short)."""
        due = self._ready_at()
        if due is None:
            return poll  # waits for an operator or a start in progress: a state change wakes the lane
        if due > self.host.clock():
            return max(0.0, min(poll, due - self.host.clock()))
        wait = min(poll, 2.0)  # look at the child now and then, even with nothing to close
        next_at = deliveries.next_due(conn, Lane.BACKSYNC, self._after())
        if next_at is not None:
            wait = min(wait, max(0.0, next_at - store.now(conn)) + 0.001)  # (due times: the store's clock)
        return wait

    def step(self, conn: Connection) -> int:
        """One turn: begin a stream, or move the current one on. Returns non-zero while busy.

        When the event core fails (the database away, a full disk) the stream holds what ran,
        claims nothing more, and records it at a later turn once the store answers: the perl
        children and their globals are kept through an outage. Any other failure (or a store
        failure while stopping) ends the stream (:meth:`give_up`).
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
        leases end. A perl child is killed only while replies are still to come, so that none
        is ever taken for another Close's."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        self.orphans += stream.held()
        self.reached = None
        for host, flying in zip(self.hosts, stream.in_flight):
            if flying:
                host.abandon(reason)

    def _begin(self, conn: Connection) -> int:
        due = self._ready_at()
        if due is None or due > self.host.clock():
            if self.wide:
                self._revive()
            return 0
        stream = _Stream(self.clock(), self.batch, len(self.hosts))
        self.stream = stream
        self.reached = None  # (from the head: nothing of this lane is in flight)
        self._push(conn, deliveries.claim(conn, limit=min(self._target(), stream.budget), lane=Lane.BACKSYNC,
                                          owner=self.owner, after=self._after()))
        if not stream.claimed:
            self.stream = None
            if self.wide:
                self._revive()  # notice a child that died while idle; start it again after its backoff
            else:
                self.host.ensure_running()  # (the one child: here, in the lane)
            self.summary.tick()  # an idle lane looks every 2 s at most (see wait)
            return 0
        return stream.claimed

    def _revive(self) -> None:
        assert self.pool is not None
        for n in range(len(self.hosts)):
            if self.pool.needs_start(n):
                self.pool.revive(n)

    def _after(self) -> tuple[float, int] | None:
        """Where the next look for Closes starts: after this lane's claims, or from the head of the
        queue once every HEAD_EVERY (what was given back or freed behind them is found then)."""
        if self.clock() - self._head_at >= HEAD_EVERY:
            self._head_at, self.reached = self.clock(), None
        return self.reached

    def _push(self, conn: Connection, claims: list[deliveries.Claimed]) -> None:
        """Hand the IDs of new ``claims`` to the children (a claim without an ID fails at once)."""
        stream = self.stream
        assert stream is not None
        stream.claimed += len(claims)
        if claims and (self.reached is None or claims[-1].position > self.reached):  # type: ignore[operator]
            self.reached = claims[-1].position
        without_id = []
        for c in claims:
            close_id = stored_field(c.event.key_json, "ID")  # the key's ID field, not the event's row id
            if close_id == "":
                now = self.clock()
                without_id.append((c, Attempt(False, now, now, error="the event has no ID to close")))
            else:
                stream.waiting.append((c, close_id))
        if without_id:
            self._settle(without_id, deliveries.finish(conn, without_id))
        self._dispatch()

    def _dispatch(self) -> None:
        """Push waiting Closes to children with room, oldest first. An ID in flight goes to the
        child that runs it, behind it: one ID is never in two children at once, and its Closes
        run in the order claimed. A Close whose ID waits for its child keeps every later Close of
        that ID waiting too."""
        stream = self.stream
        assert stream is not None
        if not stream.waiting:
            return
        usable = [n for n in range(len(self.hosts)) if not self.wide or self.pool.usable(n)]  # type: ignore[union-attr]
        if not usable:
            self._revive()
            stream.given_back += [c for c, _ in stream.waiting]  # no child can take them now: open again
            stream.waiting.clear()
            stream.topping = False
            return
        depth = self._depth()
        room = {n: depth - len(stream.in_flight[n]) for n in usable}
        batches: dict[int, list[tuple[deliveries.Claimed, str]]] = {}
        blocked: set[str] = set()
        keep: deque[tuple[deliveries.Claimed, str]] = deque()
        free = sum(r for r in room.values() if r > 0)
        waiting = stream.waiting
        while waiting and free:  # (once every child is full, the rest waits as it is, unread)
            item = waiting.popleft()
            close_id = item[1]
            held = stream.running.get(close_id)
            child = held[0] if held else max(room, key=room.__getitem__)
            if close_id in blocked or room.get(child, 0) <= 0:
                blocked.add(close_id)
                keep.append(item)
                continue
            room[child] -= 1
            free -= 1
            batches.setdefault(child, []).append(item)
            if held:
                held[1] += 1
            else:
                stream.running[close_id] = [child, 1]
        keep.extend(waiting)
        stream.waiting = keep
        for child, batch in batches.items():
            stream.in_flight[child].extend(batch)
            ids = [i for _, i in batch]
            self._take(child, self.hosts[child].push(ids, start=False) if self.wide else self.host.push(ids))

    def _take(self, child: int, outcomes: list[Attempt]) -> None:
        """Pair a child's outcomes (in push order) with their claims, each checked against the ID
        its claim was pushed as (:meth:`_misaligned`). Those never sent go to another child (with
        several) or are given back."""
        stream = self.stream
        assert stream is not None
        again: list[tuple[deliveries.Claimed, str]] = []
        for outcome in outcomes:
            claim, close_id = stream.in_flight[child].popleft()
            if outcome.subject != close_id:
                self._misaligned(child, (claim, close_id), outcome.subject)
                break
            stream.ran(close_id)
            if outcome.attempted:
                if not stream.outcomes:
                    stream.first_outcome_at = self.clock()
                stream.outcomes.append((claim, outcome))
                if self.wide:  # (what one Close takes lately: the depth follows it)
                    self.call_seconds += (outcome.ended_at - outcome.started_at - self.call_seconds) * 0.05
            elif self.wide and not self.stopping():
                again.append((claim, close_id))  # that child is down: another one takes it
            else:
                stream.given_back.append(claim)
                stream.topping = False  # ombacksync is down: claim nothing more now
        if again:
            stream.waiting.extendleft(reversed(again))

    def _misaligned(self, child: int, expected: tuple[deliveries.Claimed, str], subject: object) -> None:
        """A child's outcome names another ID than the Close it should answer: which outcome is
        whose cannot be told any more, so none of that child's is taken. Its Closes in flight are
        made due again (attempts counted: they may have run), and the child is killed so that no
        later reply of it is read either. Never expected: a guard against a silent loss."""
        stream = self.stream
        assert stream is not None
        lost = [expected, *stream.in_flight[child]]
        stream.in_flight[child].clear()
        for _, close_id in lost:
            stream.ran(close_id)
        self.orphans += [c for c, _ in lost]
        self.reached = None  # (made due again behind the lane's place in the queue: look from the head)
        reason = (f"{self.hosts[child].name} answered for ID {subject!r} where {expected[1]!r} was due: its "
                  f"{len(lost)} Close(s) in flight run again")
        log.error("backsync: %s", reason)
        self.hosts[child].abandon(reason)

    def _poll(self) -> None:
        """Take the outcomes the children have, waiting up to POLL_SLICE for the first."""
        stream = self.stream
        assert stream is not None
        if not self.wide:
            self._take(0, self.host.poll(POLL_SLICE))
            return
        busy = {fd: n for n, q in enumerate(stream.in_flight) if q for fd in self.hosts[n].wait_fds()}
        ready, _, _ = select.select(list(busy), [], [], POLL_SLICE) if busy else ([], [], [])
        if self.clock() >= self._swept_at + POLL_SLICE:  # now and then every busy child: a call's timeout
            self._swept_at = self.clock()
            ready = list(busy)
        for n in sorted({busy[fd] for fd in ready}):
            self._take(n, self.hosts[n].poll(0))

    def _advance(self, conn: Connection) -> int:
        stream = self.stream
        assert stream is not None
        if stream.flying():
            self._poll()
        if stream.topping and (self.stopping() or not self.wide and (self.clock() > stream.started + BATCH_SECONDS
                                                                     or stream.claimed >= stream.budget)):
            stream.topping = False
        if self.wide:
            self._widen(conn)
        perl_waits = not stream.flying()
        if stream.outcomes and (len(stream.outcomes) >= RECORD_EVERY or perl_waits or self.wide and (
                self.clock() - stream.first_outcome_at >= RECORD_SECONDS
                or stream.topping and len(stream.waiting) < len(self.hosts))):  # (children about to run dry)
            self._record(conn, wait=perl_waits)
        if not stream.flying() and not stream.outcomes and not stream.waiting:
            self._end(conn)
        return 1

    def _depth(self) -> int:
        """Closes one child holds at a time: with one child a full WINDOW; with several, one while
        Closes take QUEUE_SECONDS or more (a ticket system: a hang then holds up no other Close),
        and as many as fit in QUEUE_SECONDS for a quick script (the pipe keeps it busy)."""
        if not self.wide:
            return WINDOW
        return max(1, min(WINDOW // len(self.hosts), int(QUEUE_SECONDS / max(self.call_seconds, 1e-6))))

    def _target(self) -> int:
        """Closes a stream holds before recording: with one child a full WINDOW in its pipe; with
        several, what the children hold and about PREFETCH_SECONDS worth waiting for the next free
        one (a few for a slow ticket system, hundreds for a quick script)."""
        if not self.wide:
            return WINDOW
        children = len(self.hosts)
        return min(WINDOW + children, children * self._depth() + max(children, int(self.rate * PREFETCH_SECONDS)))

    def _widen(self, conn: Connection) -> None:
        """With several children: hand waiting Closes to children that came free, and look for
        new ones now and then while a child has room (a long Close must not hold the others up
        until the next record)."""
        stream = self.stream
        assert stream is not None
        if self.stopping():  # a stop waits for what runs, not for what waits
            stream.given_back += [c for c, _ in stream.waiting]
            stream.waiting.clear()
            return
        if self.clock() >= self._revive_at:  # a child that died or faulted mid-stream starts again now,
            self._revive_at = self.clock() + REVIVE_EVERY  # not once the stream (a storm: hours) has ended
            self._revive()
        self._dispatch()
        room = self._target() - stream.flying() - len(stream.waiting)
        if stream.topping and room > 0 and not stream.outcomes and self.clock() >= stream.look_at:
            stream.look_at = self.clock() + LOOK_EVERY
            self._push(conn, deliveries.claim(conn, limit=room, lane=Lane.BACKSYNC, owner=self.owner,
                                              after=self._after()))

    def _record(self, conn: Connection, *, wait: bool) -> None:
        """Record the outcomes and claim enough more to keep the children a full window ahead, in
        one transaction. While another writer holds the lock and perl still has work, decline (the
        outcomes are offered again on a later turn): the lane waits for the lock only when perl does."""
        stream = self.stream
        assert stream is not None
        want = self._target() - stream.flying() - len(stream.waiting) if stream.topping else 0
        try:
            settled, claims = deliveries.finish_and_claim(
                conn, stream.outcomes, limit=max(0, min(want, stream.budget - stream.claimed)), lane=Lane.BACKSYNC,
                owner=self.owner, wait=wait, after=self._after())
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
        if self.wide:  # (a stream of several children may run for hours: its summary goes as it records)
            self.summary.add(len(done) - failed, streams=0)
            took = self.clock() - stream.started
            if took >= RECORD_SECONDS:
                self.rate = stream.attempted / took

    def _end(self, conn: Connection) -> None:
        stream = self.stream
        assert stream is not None
        self.stream = None
        self.reached = None
        if stream.given_back:
            deliveries.release(conn, stream.given_back)  # never reached the script: no attempt counted
        took = self.clock() - stream.started
        if stream.attempted and took > 0 and not self.wide:
            self.batch = max(1, min(MAX_BATCH, int(stream.attempted / took * BATCH_SECONDS)))
        if stream.failed or stream.given_back:
            self.summary.flush()
            log.info("backsync: %d closed, %d failed, %d released%s", stream.attempted - stream.failed,
                     stream.failed, len(stream.given_back),
                     f" (first error: {stream.first_error})" if stream.first_error else "")
        elif not self.wide:
            self.summary.add(stream.attempted)

    def status(self) -> dict[str, Any]:
        """What the lane is doing, for tests and ``status``."""
        stream = self.stream
        return {"streaming": stream is not None, "in_flight": stream.flying() if stream else 0}

"""The backsync lane's step function, driven turn by turn: a stand-in perl host and a fake clock
over a real SQLite event core, then the real perl host where replies and the child matter.

The guarantees: perl never runs more than WINDOW Closes ahead of the last record (what a crash
may repeat); a record declined while another writer holds the lock is offered again; a failed
record never lets a reply be taken for another Close; a stop ends the stream after what is in
flight; Closes that never reached the script are given back without an attempt.
"""

from __future__ import annotations

import sqlite3
from collections import deque

import pytest
from queue_support import DELIVERIES

from bridge import store
from bridge.delivery import backsync, lanes
from bridge.delivery.lanes import BATCH_SECONDS, RECORD_EVERY, WINDOW, BacksyncLane
from bridge.eventcore import deliveries, ledger
from bridge.home import Home
from bridge.model import Attempt
from bridge.ombacksync.perlhost import PerlHost


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StandInHost:
    """The perl host's side of the lane's contract: push IDs, poll outcomes, say when ready.
    Answers ``per_poll`` Closes a poll; ``down`` refuses pushes (ombacksync not running)."""

    def __init__(self, clock: Clock, per_poll: int = 100) -> None:
        self.clock = clock
        self.per_poll = per_poll
        self.queue: deque[str] = deque()
        self.pushed: list[str] = []
        self.ready: float | None = clock()
        self.down = False
        self.abandoned: list[str] = []
        self.high_water = 0  # the most Closes ever in perl
        self.name = "ombacksync"

    def ready_at(self) -> float | None:
        return self.ready

    def ensure_running(self) -> bool:
        return not self.down

    def push(self, ids: list[str]) -> list[Attempt]:
        if self.down:
            return [Attempt(False, 0, 0, error="ombacksync is backoff", attempted=False, subject=i) for i in ids]
        self.queue.extend(ids)
        self.pushed += ids
        self.high_water = max(self.high_water, len(self.queue))
        return []

    def poll(self, timeout: float) -> list[Attempt]:
        n = min(self.per_poll, len(self.queue))
        return [Attempt(True, 1.0, 2.0, subject=self.queue.popleft()) for _ in range(n)]

    def abandon(self, reason: str) -> None:
        self.abandoned.append(reason)
        self.queue.clear()


@pytest.fixture
def core(home: Home, conn: sqlite3.Connection) -> sqlite3.Connection:
    backsync.ensure_backsync(conn)
    return conn


def close(conn: sqlite3.Connection, n: int, prefix: str = "C") -> list[str]:
    ids = [f"{prefix}-{k}" for k in range(n)]
    backsync.close_events(conn, ids)
    return ids


def recorded(conn: sqlite3.Connection) -> dict[str, int]:
    """Attempts recorded per Close ID."""
    rows = conn.execute("SELECT json_extract(e.key, '$.ID'), count(a.id) FROM subscriber_events se "
                        "JOIN events e ON e.id = se.event_id LEFT JOIN attempts a ON a.subscriber_event_id = se.id "
                        "GROUP BY se.id").fetchall()
    return {r[0]: r[1] for r in rows}


def make_lane(host: StandInHost, clock: Clock, stopping: list[bool] | None = None) -> BacksyncLane:
    flag = stopping if stopping is not None else [False]
    lane = BacksyncLane(host, "supervisor:test", count=lambda ok, failed: None, stopping=lambda: flag[0],
                        clock=clock)
    lane.batch = 100_000  # no adaptive budget in these tests: a stream is bounded by the clock
    return lane


def run_stream(lane: BacksyncLane, conn: sqlite3.Connection, *, each=lambda: None, limit: int = 10_000) -> int:
    """Steps until the current stream ends (or none begins); returns how many steps it took."""
    steps = 0
    while steps < limit:
        steps += 1
        lane.step(conn)
        each()
        if lane.stream is None:
            return steps
    raise AssertionError("the stream did not end")


def test_perl_never_runs_more_than_the_window_ahead_of_the_last_record(core: sqlite3.Connection) -> None:
    ids = close(core, 3000)
    clock = Clock()
    host = StandInHost(clock, per_poll=70)
    lane = make_lane(host, clock)
    done_before = 0

    def check() -> None:
        # what ran or runs without being recorded: a crash now would repeat exactly these
        done = sum(1 for n in recorded(core).values() if n)
        assert len(host.pushed) - done <= WINDOW
        nonlocal done_before
        assert done >= done_before
        done_before = done

    run_stream(lane, core, each=check)
    assert host.pushed == ids and host.high_water <= WINDOW
    assert recorded(core) == {i: 1 for i in ids}


def test_records_come_every_record_every_outcomes_while_perl_works(core: sqlite3.Connection) -> None:
    close(core, 1000)
    clock = Clock()
    host = StandInHost(clock, per_poll=50)
    lane = make_lane(host, clock)
    sizes: list[int] = []
    real = deliveries.finish_and_claim

    def spy(conn, done, **kw):
        sizes.append(len(done))
        return real(conn, done, **kw)

    lanes.deliveries.finish_and_claim = spy  # type: ignore[attr-defined]
    try:
        run_stream(lane, core)
    finally:
        lanes.deliveries.finish_and_claim = real  # type: ignore[attr-defined]
    assert sizes[:3] == [RECORD_EVERY] * 3 and sum(sizes) == 1000


def test_a_record_declined_while_another_writer_holds_the_lock_is_offered_again(
        home: Home, core: sqlite3.Connection) -> None:
    ids = close(core, 1200)
    clock = Clock()
    host = StandInHost(clock, per_poll=60)
    lane = make_lane(host, clock)
    other = store.connect(home)
    declined = 0
    real = deliveries.finish_and_claim

    def counting(conn, done, **kw):
        nonlocal declined
        try:
            return real(conn, done, **kw)
        except store.Busy:
            declined += 1
            raise

    lanes.deliveries.finish_and_claim = counting  # type: ignore[attr-defined]
    try:
        lane.step(core)  # the first claim, before the sender takes the write lock
        other.execute("BEGIN IMMEDIATE")
        while len(host.queue) > host.per_poll:  # perl still has work: the lane never waits for the lock
            lane.step(core)
        stream = lane.stream
        assert declined > 0 and len(stream.outcomes) + stream.flying() == WINDOW  # all kept, none recorded
        other.rollback()  # the sender commits
        run_stream(lane, core)
    finally:
        lanes.deliveries.finish_and_claim = real  # type: ignore[attr-defined]
        other.close()
    assert recorded(core) == {i: 1 for i in ids}  # each once, the declined ones included


def test_an_outcome_that_names_another_id_is_taken_for_no_close(core: sqlite3.Connection,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    # A guard: the host answers in push order, so this never happens; if its bookkeeping and the
    # lane's ever disagreed, an outcome taken for the Close due would record a Close that never ran.
    ids = close(core, 50)
    clock = Clock()
    host = StandInHost(clock, per_poll=10)
    answer, skewed = host.poll, []

    def poll(timeout: float) -> list[Attempt]:
        out = answer(timeout)
        if out and not skewed:
            skewed.append(out[0].subject)
            out[0] = Attempt(True, 1.0, 2.0, subject="ANOTHER")
        return out

    host.poll = poll  # type: ignore[method-assign]
    lane = make_lane(host, clock)
    for _ in range(5):
        run_stream(lane, core)
    assert ledger.backlog(core)["open"] == 0
    assert len(host.abandoned) == 1 and "answered for ID 'ANOTHER' where 'C-0' was due" in host.abandoned[0]
    assert host.pushed.count(skewed[0]) == 2  # what was in flight there ran again
    assert recorded(core) == {i: 1 for i in ids}  # (the first claim of each rerun left no attempt row)
    assert "answered for ID 'ANOTHER'" in caplog.text


def test_a_stream_tops_up_for_batch_seconds_then_finishes_what_is_in_flight(core: sqlite3.Connection) -> None:
    close(core, 5000)
    clock = Clock()
    host = StandInHost(clock, per_poll=100)
    lane = make_lane(host, clock)

    def tick() -> None:
        clock.now += BATCH_SECONDS / 10

    run_stream(lane, core, each=tick)
    assert WINDOW <= len(host.pushed) < 5000  # topped up for a while, then stopped claiming
    assert sum(recorded(core).values()) == len(host.pushed) and not host.queue


def test_a_stop_claims_nothing_more_and_ends_after_what_is_in_flight(core: sqlite3.Connection) -> None:
    close(core, 5000)
    clock = Clock()
    host = StandInHost(clock, per_poll=100)
    stopping = [False]
    lane = make_lane(host, clock, stopping)
    lane.step(core)
    stopping[0] = True
    in_perl = len(host.queue)
    steps = run_stream(lane, core)
    assert len(host.pushed) == WINDOW and steps <= in_perl // 100 + 2
    assert sum(recorded(core).values()) == WINDOW


def test_closes_that_never_reached_the_script_are_given_back_without_an_attempt(core: sqlite3.Connection) -> None:
    ids = close(core, 20)
    clock = Clock()
    host = StandInHost(clock)
    host.down = True
    lane = make_lane(host, clock)
    run_stream(lane, core)
    assert recorded(core) == {i: 0 for i in ids}
    assert ledger.backlog(core)["open"] == 20 and len(deliveries.claim(core, limit=50)) == 20  # due again


def test_nothing_is_claimed_while_ombacksync_waits_and_the_lane_sleeps_until_it_is_due(
        core: sqlite3.Connection) -> None:
    close(core, 5)
    clock = Clock()
    host = StandInHost(clock)
    lane = make_lane(host, clock)
    host.ready = None  # syntax-error or stopped: an operator must act
    assert lane.step(core) == 0 and lane.wait(core, poll=30.0) == 30.0
    host.ready = clock() + 7.5  # backoff
    assert lane.step(core) == 0 and lane.wait(core, poll=30.0) == pytest.approx(7.5)
    assert not host.pushed and ledger.backlog(core)["open"] == 5
    host.ready = clock()
    assert lane.step(core) == 5 and len(host.pushed) == 5


SLOW_CLOSES = r"""
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    select(undef, undef, undef, 0.002);
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/OMBSOutput.txt") or die $!;
    print {$fh} "Close $id\n";
    close $fh;
    1;
}
1;
"""


def test_a_failed_record_keeps_the_child_and_records_what_ran_once_the_store_answers(
        home: Home, core: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recording fails (a full disk, the database away) while perl still has Closes in its pipe
    # (issue 28: a database blip restarted every node's perl child, Init and all). The lane holds
    # what ran, claims nothing more, keeps the child, and records each Close once afterwards.
    home.script.write_text(SLOW_CLOSES)
    ids = close(core, 600, prefix="B")
    with PerlHost(home) as host:
        host.start()
        first = host.pid
        lane = BacksyncLane(host, "supervisor:test", count=lambda ok, failed: None, stopping=lambda: False)

        def full(*args, **kw):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(lanes.deliveries, "finish_and_claim", full)
        failures = 0
        while failures < 50:  # the store stays away for a while: every record fails
            try:
                lane.step(core)
            except sqlite3.OperationalError:
                failures += 1
        assert lane.stream is not None and not lane.stream.topping
        monkeypatch.undo()
        while ledger.backlog(core)["open"] or lane.stream is not None:
            run_stream(lane, core)
        assert host.pid == first and host.restarts == 0 and host.state.value == "running"
    assert recorded(core) == {i: 1 for i in ids}
    assert sorted(home.output.read_text().splitlines()) == sorted(f"Close {i}" for i in ids)  # each once


def test_a_failed_record_while_stopping_gives_the_stream_up_and_no_reply_is_taken_for_another_close(
        home: Home, core: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stopping while the store fails: the stream is given up (not held for ever); with replies
    # still to come the child is killed so that none of them is read as another Close's.
    home.script.write_text(SLOW_CLOSES)
    close(core, 600, prefix="B")
    stopping = [False]
    with PerlHost(home) as host:
        host.start()
        first = host.pid
        lane = BacksyncLane(host, "supervisor:test", count=lambda ok, failed: None, stopping=lambda: stopping[0])
        lane.batch = 100_000  # a full window in flight: recording begins while replies are still to come
        lane.step(core)
        assert host.in_flight > 300

        def full(*args, **kw):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(lanes.deliveries, "finish_and_claim", full)
        stopping[0] = True
        with pytest.raises(sqlite3.OperationalError):
            run_stream(lane, core)
        assert lane.stream is None and host.in_flight == 0 and host.restarts == 1
        assert "the Closes in flight were abandoned: database or disk is full" in host.last_error
        (after,) = host.close_many(["X-1"])
        assert after.ok and after.subject == "X-1" and host.pid != first
        assert home.output.read_text().splitlines()[-1] == "Close X-1"
        # the given-up stream's claims are due again at the lane's next turn, not after their lease
        held = lane.orphans
        assert held and all(c.attempt == 1 for c in held)
        monkeypatch.undo()
        lane.step(core)
        assert lane.orphans == []
        rows = core.execute(f"SELECT claimed_by, attempts FROM {DELIVERIES} WHERE id IN "
                            f"({','.join(str(c.id) for c in held)})").fetchall()
        assert all(r[0] != "supervisor:test" or r[1] == 2 for r in rows)  # free, or claimed anew by that turn


def test_the_real_host_streams_every_close_once_in_order(home: Home, core: sqlite3.Connection) -> None:
    ids = close(core, 1500, prefix="R")
    with PerlHost(home) as host:
        lane = BacksyncLane(host, "supervisor:test", count=lambda ok, failed: None, stopping=lambda: False)
        lane.batch = 100_000
        host.start()
        while ledger.backlog(core)["open"]:
            run_stream(lane, core)
    assert recorded(core) == {i: 1 for i in ids}
    assert [line.split()[-1] for line in home.output.read_text().splitlines() if " Close " in line] == ids


def test_a_restart_mid_stream_hands_over_what_was_in_flight_and_repeats_nothing(
        home: Home, core: sqlite3.Connection) -> None:
    # The operator restarts ombacksync while perl has Closes in its pipe: they run (they were
    # sent), their outcomes reach the lane, and nothing is closed twice or lost.
    import threading

    home.script.write_text(SLOW_CLOSES)
    ids = close(core, 400, prefix="M")
    with PerlHost(home) as host:
        host.start()
        first = host.pid
        lane = BacksyncLane(host, "supervisor:test", count=lambda ok, failed: None, stopping=lambda: False)
        lane.batch = 100_000
        lane.step(core)
        assert host.in_flight > 100
        restarter = threading.Thread(target=host.restart)
        restarter.start()
        while ledger.backlog(core)["open"] or lane.stream is not None:
            run_stream(lane, core)
        restarter.join(30)
        assert host.pid != first and host.restarts == 0  # an operator's restart, not a fault
    assert recorded(core) == {i: 1 for i in ids}
    assert sorted(home.output.read_text().splitlines()) == sorted(f"Close {i}" for i in ids)

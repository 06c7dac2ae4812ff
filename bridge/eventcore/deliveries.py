"""Subscriber events as a durable queue: the only writer of ``subscriber_events`` and ``attempts``.

A subscriber event is ``open`` until it is ``done``, ``failed`` (retries used up) or ``purged``
(:class:`bridge.model.DeliveryStatus`). Its row is written twice: inserted when the event is sent,
updated when an outcome is recorded. Claiming it writes a row of ``claims`` instead
(:mod:`bridge.eventcore.claims`: a lease, the claimer, and the attempt counted *at claim time*), so
a claimer that dies (kill -9 at any instant) leaves a delivery that is simply free again when the
lease runs out (or at once, when the next supervisor takes back a dead one's claims), its attempt
still counted. Recording an outcome is fenced by the attempt number: a claimer whose lease was lost
and re-claimed cannot overwrite the newer claim's outcome. Nothing is deleted on read; a
delivery that is claimed cannot be deleted (removing its subscriber is refused until the claim is
released). Every attempt is recorded. Operators' reads of these tables (listings, history,
backlog, chart) are :mod:`bridge.eventcore.ledger`'s.
"""

from __future__ import annotations

import json

from ..errors import UsageError
from ..model import ActionKind, Attempt, DeliveryStatus, Lane, Settlement
from ..names import value_text
from ..store import Connection, transaction
from ..store import now as wall_now
from . import claims as leases

# `ombridge send` enqueues through this module: typing, random, the actions and pauses (held_back:
# its module needs typing) are imported only where they are needed (see bench/bench_events.py for
# the startup figure).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


LEASE_MARGIN = 30.0  # seconds a claim outlives the subscriber's own timeout
RETRY_BASE = 1.0
RETRY_CAP = 300.0

_OPEN = DeliveryStatus.OPEN.value
_FAILED = DeliveryStatus.FAILED.value
_FINISHED = (DeliveryStatus.DONE.value, DeliveryStatus.PURGED.value)  # what retention may delete


class EventContext:
    """What an action knows of the event it delivers. The key is parsed from ``key_json`` when
    first read: the backsync lane claims thousands of Closes and reads only their ID (see
    :func:`bridge.eventcore.events.stored_field`)."""

    __slots__ = ("id", "topic", "_key", "key_json", "depth", "context")

    def __init__(self, id: int, topic: str, key: Mapping[str, Any] | None, key_json: str, depth: int,
                 context: Mapping[str, str] | None = None) -> None:
        self.id = id
        self.topic = topic
        self._key = key
        self.key_json = key_json
        self.depth = depth
        self.context = context or {}  # context variables looked up when the event was sent

    @property
    def key(self) -> Mapping[str, Any]:
        if self._key is None:
            self._key = json.loads(self.key_json)
        return self._key

    def variables(self) -> dict[str, str]:
        """Every &VAR of this event: context columns, the key fields (which win), TOPIC, EVENT, KEY."""
        values = dict(self.context)
        values.update((name, value_text(v)) for name, v in self.key.items())
        values.update(TOPIC=self.topic, EVENT=str(self.id), KEY=self.key_json)
        return values


class Claimed:
    """One claimed subscriber event with what is needed to deliver it."""

    __slots__ = ("id", "attempt", "event", "subscriber_id", "action", "target", "timeout", "retries", "headers",
                 "position")

    def __init__(self, id: int, attempt: int, event: EventContext, subscriber_id: int, action: ActionKind,
                 target: str, timeout: float, retries: int, headers: dict[str, str] | None = None) -> None:
        self.id = id
        self.attempt = attempt  # the attempt number this claim holds (the fencing token)
        self.event = event
        self.subscriber_id = subscriber_id
        self.action = action
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.headers = headers or {}  # a web subscriber's secret headers
        self.position: tuple[float, int] | None = None  # (due, id): its place in the queue when claimed

    def __repr__(self) -> str:
        return f"Claimed(id={self.id}, attempt={self.attempt}, subscriber_id={self.subscriber_id})"


class Delivery:
    """A subscriber event to create: :func:`enqueue` writes one row per delivery. A synchronized
    one is created already claimed by its sender (``claimed_by``: the claim's owner)."""

    __slots__ = ("event_id", "subscriber_id", "subscriber_topic_id", "timeout", "lane", "claimed_by")

    def __init__(self, event_id: int, subscriber_id: int, subscriber_topic_id: int, timeout: float, lane: Lane,
                 claimed_by: str | None = None) -> None:
        self.event_id = event_id
        self.subscriber_id = subscriber_id
        self.subscriber_topic_id = subscriber_topic_id
        self.timeout = timeout
        self.lane = lane
        self.claimed_by = claimed_by


# -- writing ------------------------------------------------------------------------------------


def enqueue(conn: Connection, rows: Sequence[Delivery], at: float) -> list[int]:
    """Create one open subscriber event per row, inside the caller's transaction; returns the ids
    of the rows created already claimed (attempt 1, under a lease), in order."""
    claimed: list[int] = []
    free = [(r.event_id, r.subscriber_id, r.subscriber_topic_id, r.lane.value, 0, _OPEN, 0, at, at, at)
            for r in rows if r.claimed_by is None]
    if free:
        conn.dialect.insert_rows(conn, "subscriber_events", "event_id, subscriber_id, subscriber_topic_id, lane, "
                                 "synchronized, status, attempts, next_attempt_at, created_at, updated_at", free)
        conn.dialect.announce(conn)
    for r in rows:
        if r.claimed_by is not None:
            claimed.append(int(conn.execute(
                "INSERT INTO subscriber_events (event_id, subscriber_id, subscriber_topic_id, lane, synchronized, "
                f"status, attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, 1, '{_OPEN}', 0, ?, ?, ?) "
                "RETURNING id", (r.event_id, r.subscriber_id, r.subscriber_topic_id, r.lane.value, at, at, at)
            ).fetchone()[0]))
            leases.take(conn, [(claimed[-1], 1, at + r.timeout + LEASE_MARGIN)], r.claimed_by)
    return claimed


_CLAIMED_SELECT = (
    "SELECT se.id, se.attempts, c.attempt, se.subscriber_id, e.id AS event_id, e.topic, e.key, e.depth, e.context, "
    "s.action, s.target, s.timeout, s.retries, s.secret_headers, se.next_attempt_at "
    "FROM subscriber_events se JOIN events e ON e.id = se.event_id JOIN subscribers s ON s.id = se.subscriber_id "
    + leases.JOIN
)


_ACTION_KINDS = {kind.value: kind for kind in ActionKind}


def _claims(rows: list[tuple[Any, ...]], taken: set[int]) -> list[Claimed]:
    # Plain tuples in _CLAIMED_SELECT's order: a burst claims thousands of rows at a time, and
    # reading Row by name costs a third of building a claim. Only those of ``taken``.
    loads = json.loads
    claimed = []
    for (se_id, attempts, counted, subscriber_id, event_id, topic, key, depth, context, action, target, timeout,
         retries, secret_headers, due) in rows:
        if se_id not in taken:
            continue
        event = EventContext(event_id, topic, None, key, depth, loads(context) if context else None)
        claimed.append(Claimed(se_id, _next_attempt(attempts, counted), event, subscriber_id, _ACTION_KINDS[action],
                               target, timeout, retries, loads(secret_headers) if secret_headers else None))
        claimed[-1].position = (due, se_id)
    return claimed


def _next_attempt(attempts: int, counted: int | None) -> int:
    # The attempt a new claim makes: one past those recorded, or past the last claim's (one that
    # ran out, its attempt counted), whichever is further.
    return max(attempts, counted or 0) + 1


def claim(conn: Connection, *, limit: int = 1, at: float | None = None, lane: Lane | None = None,
          owner: str | None = None, skip: Sequence[int] = (), after: tuple[float, int] | None = None) -> list[Claimed]:
    """Claim up to ``limit`` due open subscriber events (of ``lane``, or of any), oldest due
    first, for ``owner``; none of a paused subscriber, nor of those in ``skip`` (those at their
    share of the action lanes), nor of those before ``after`` in the queue (see :func:`_of_lane`)."""
    from .pauses import held_back

    at = wall_now(conn) if at is None else at
    of_lane, args = _of_lane(lane, skip, after)
    # A read first: a lane woken for another lane's work (or for nothing) takes no write lock.
    if conn.execute(f"SELECT 1 FROM subscriber_events se {leases.JOIN}WHERE {of_lane}se.status = '{_OPEN}' "
                    f"AND se.next_attempt_at <= ? AND {leases.FREE} LIMIT 1", (*args, at, at)).fetchone() is None:
        return []
    held = held_back(conn, lane)
    if held is None:
        return []
    with transaction(conn):
        return _claim(conn, limit, at, lane, owner, held, skip, after)


def _claim(conn: Connection, limit: int, at: float, lane: Lane | None, owner: str | None,
           held: tuple[str, list[int]] | None = None, skip: Sequence[int] = (),
           after: tuple[float, int] | None = None) -> list[Claimed]:
    # Inside the caller's transaction; ``held``: held_back's answer when the caller read it already.
    from .pauses import held_back

    held = held_back(conn, lane) if held is None else held
    if held is None:
        return []  # every subscriber of the lane is paused
    of_lane, args = _of_lane(lane, skip, after)
    cur = conn.cursor()
    cur.row_factory = None  # tuples (see _claims)
    rows = cur.execute(
        _CLAIMED_SELECT + f"WHERE {of_lane}{held[0]}se.status = '{_OPEN}' AND se.next_attempt_at <= ? "
        f"AND {leases.FREE} ORDER BY se.next_attempt_at, se.id LIMIT ?" + conn.dialect.skip_locked,
        (*args, *held[1], at, at, limit)
    ).fetchall()
    # Count the attempt now and hold the deliveries for a lease (timeout + margin): a row of
    # claims each, the queue rows untouched. On PostgreSQL, one another node claimed since the
    # read is not taken (its claim's count moved on).
    taken = leases.take(conn, [(r[0], _next_attempt(r[1], r[2]), at + r[11] + LEASE_MARGIN) for r in rows], owner)
    return _claims(rows, taken)


def _where_ids(conn: Connection, sql: str, args: tuple[Any, ...], ids: Sequence[int]) -> list[Any]:
    """Run ``sql`` (holding ``IN ({ids})``) over ``ids`` (500 at a time on SQLite); the rows it
    returned (a SELECT's)."""
    rows: list[Any] = []
    for chunk_sql, chunk_args in conn.dialect.in_ids(sql, args, ids):
        rows += conn.execute(chunk_sql, chunk_args).fetchall()
    return rows


def retry_delay(attempt: int) -> float:
    """Capped exponential backoff with jitter before the attempt after ``attempt``."""
    import random

    return min(RETRY_CAP, RETRY_BASE * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def settle(claim: Claimed, result: Attempt) -> Settlement:
    """What an attempt's result makes of its delivery (before the fence is checked)."""
    if result.ok:
        return Settlement.DONE
    return Settlement.FAILED if result.final or claim.attempt > claim.retries else Settlement.RETRY


def finish(conn: Connection, done: Sequence[tuple[Claimed, Attempt]]) -> list[Settlement]:
    """Record attempts and their outcomes in one transaction; returns what each became.

    Success -> done. Failure -> open again after backoff, or failed once the subscriber's
    retries are used up (attempts > retries). A claim whose lease was taken over meanwhile
    (its attempt number is no longer current), or whose row is gone, is ``stale``: its attempt
    is recorded if the row still exists, and nothing else of the batch is affected.
    """
    if not done:
        return []
    at = wall_now(conn)
    with transaction(conn):
        return _finish(conn, done, at)


def finish_and_claim(conn: Connection, done: Sequence[tuple[Claimed, Attempt]], *, limit: int,
                     lane: Lane, owner: str, wait: bool = True,
                     after: tuple[float, int] | None = None) -> tuple[list[Settlement], list[Claimed]]:
    """:func:`finish` ``done``, then :func:`claim` up to ``limit`` more, in one transaction: a
    lane that streams its work takes the write lock once per chunk, not twice. With
    ``wait=False``, raises :class:`bridge.store.Busy` at once (nothing done) while another
    writer holds the lock."""
    at = wall_now(conn)
    with transaction(conn, wait=wait):
        settled = _finish(conn, done, at) if done else []
        return settled, _claim(conn, limit, at, lane, owner, after=after) if limit > 0 else []


# An outcome is recorded only for the claim that holds the delivery now: its attempt is the one
# in ``claims`` (a claim taken over meanwhile moved it on), and no outcome of it is recorded yet
# (the row's attempts are below it); the row is open (not finished or purged meanwhile). The
# status is compared inside the claim's subquery: as a condition of its own, `status = 'open'`
# lets PostgreSQL's planner answer `id = ANY(...)` by walking the whole partial index of open
# deliveries (its predicate) while the table has no statistics yet (a burst into a new or empty
# queue: 270 ms a statement instead of 1, for the minute until autovacuum analyzes it).
_CURRENT = ("attempts < ? AND (SELECT c.attempt FROM claims c WHERE c.delivery_id = subscriber_events.id "
            f"AND subscriber_events.status = '{_OPEN}') = ?")


def _finish(conn: Connection, done: Sequence[tuple[Claimed, Attempt]], at: float) -> list[Settlement]:
    # Inside the caller's transaction. Each outcome's write is fenced by the attempt number its
    # claim counted (_CURRENT, in the UPDATE itself): a claim taken over meanwhile or finished
    # changes nothing and is stale. Successes, the common case, go in with one UPDATE per attempt
    # number (the backsync records hundreds of Closes at a time). On PostgreSQL the rows are
    # locked first: a claimer locks them too before it claims (skip_locked), so once they are ours
    # no claim can come between, and one that came before is committed and seen by the fence's
    # next statement (an UPDATE's subquery sees the claims as they were when it began).
    conn.dialect.lock_rows(conn, "subscriber_events", sorted({c.id for c, _ in done}))
    by_attempt: dict[int, list[int]] = {}
    for c, r in done:
        if r.ok:
            by_attempt.setdefault(c.attempt, []).append(c.id)
    current = {(row[0], attempt) for attempt, ids in by_attempt.items() for row in _where_ids(
        conn, "UPDATE subscriber_events SET status = ?, attempts = ?, next_attempt_at = ?, last_error = NULL, "
              f"updated_at = ? WHERE {_CURRENT} AND id IN ({{ids}}) RETURNING id",
        (Settlement.DONE.value, attempt, at, at, attempt, attempt), ids)}
    settled = []
    for c, r in done:
        s = settle(c, r)
        if not r.ok and conn.execute(
                "UPDATE subscriber_events SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ?, "
                f"updated_at = ? WHERE id = ? AND {_CURRENT}",
                (s.value, c.attempt,
                 at + retry_delay(c.attempt) if s is Settlement.RETRY else at, r.error, at, c.id, c.attempt,
                 c.attempt)).rowcount:
            current.add((c.id, c.attempt))
        settled.append(s if (c.id, c.attempt) in current else Settlement.STALE)
    _record_attempts(conn, done, current)
    return settled


def _record_attempts(conn: Connection, done: Sequence[tuple[Claimed, Attempt]],
                     current: set[tuple[int, int]]) -> None:
    # Every attempt is recorded; a stale claim's only while its row exists. On SQLite, those of
    # current claims that ended alike (a chunk of Closes shares its times and outcome) go in with
    # one INSERT ... SELECT over their ids instead of a row of eight values each; on PostgreSQL,
    # COPY of every row is cheaper still: one statement, no grouping.
    alike: dict[tuple[Any, ...], list[int]] = {}
    rows = []
    for c, r in done:
        values = (r.started_at, r.ended_at, int(r.ok), r.exit_status, r.output, r.error)
        if (c.id, c.attempt) in current and not conn.dialect.copies:
            alike.setdefault(values, []).append(c.id)
        elif (c.id, c.attempt) in current or _exists(conn, c.id):
            rows.append((c.id, c.attempt, *values))
    for values, ids in alike.items():
        _where_ids(conn, f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) SELECT id, attempts, ?, ?, ?, ?, ?, ? "
                         "FROM subscriber_events WHERE id IN ({ids})", values, ids)
    if rows:
        conn.dialect.insert_rows(conn, "attempts", _ATTEMPT_COLUMNS, rows)


_ATTEMPT_COLUMNS = "subscriber_event_id, number, started_at, ended_at, ok, exit_status, output, error"


def _exists(conn: Connection, delivery_id: int) -> bool:
    # A stale claim's attempt is still recorded, unless its row is gone (its subscriber removed).
    return conn.execute("SELECT 1 FROM subscriber_events WHERE id = ?", (delivery_id,)).fetchone() is not None


def release(conn: Connection, claims: Sequence[Claimed]) -> None:
    """Give back claims that were never attempted: the attempt is not counted, the delivery is
    free at once, at its place in the queue."""
    with transaction(conn):
        leases.release(conn, [(c.id, c.attempt) for c in claims])


def due_again(conn: Connection, claims: Sequence[Claimed]) -> None:
    """Make free again, at their places in the queue, claims whose outcomes could not be recorded
    (the stream that held them failed); their attempts stay counted: they may have run. A claim
    taken over meanwhile (its attempt number moved on) or finished is left alone."""
    with transaction(conn):
        leases.end_leases(conn, [(c.id, c.attempt) for c in claims])
        conn.dialect.announce(conn)


def retry_failed(conn: Connection, *, subscriber_id: int | None = None, event_id: int | None = None,
                 delivery_ids: Sequence[int] | None = None) -> int:
    """Put failed deliveries (of a subscriber, of an event, or those of ``delivery_ids`` that are
    failed) back to open, due now, for a new round of attempts (the count starts again); returns
    how many."""
    from .ledger import equal_conditions

    where, args = equal_conditions([("subscriber_id", subscriber_id), ("event_id", event_id)])
    at = wall_now(conn)
    sql = (f"UPDATE subscriber_events SET status = '{_OPEN}', attempts = 0, next_attempt_at = ?, updated_at = ? "
           f"WHERE status = '{_FAILED}'" + "".join(f" AND {w}" for w in where))
    with transaction(conn):
        if delivery_ids is None:
            ids = [r[0] for r in conn.execute(sql + " RETURNING id", (at, at, *args))]
        else:
            ids = [r[0] for r in _where_ids(conn, sql + " AND id IN ({ids}) RETURNING id", (at, at, *args),
                                            list(delivery_ids))]
        if ids:
            leases.forget(conn, ids)  # (the count starts again: no claim goes on from the last one)
            conn.dialect.announce(conn)
        return len(ids)


def due_now(conn: Connection, delivery_ids: Sequence[int]) -> int:
    """Make those of ``delivery_ids`` that are open and waiting in backoff due at once: *retry
    now*, the attempt count kept (the round goes on). Returns how many. (A claimed delivery is
    not waiting: it was claimed because it was due.)"""
    at = wall_now(conn)
    sql = (f"UPDATE subscriber_events SET next_attempt_at = ?, updated_at = ? WHERE status = '{_OPEN}' "
           "AND next_attempt_at > ? AND id IN ({ids})")
    with transaction(conn):
        count = _count_ids(conn, sql, (at, at, at), delivery_ids)
        if count:
            conn.dialect.announce(conn)
        return count


def purge(conn: Connection, subscriber_id: int) -> int:
    """Drop a subscriber's open deliveries (status ``purged``) inside the caller's transaction;
    returns how many. A delivery in flight finishes, but its outcome no longer changes the row."""
    at = wall_now(conn)
    return conn.execute(
        f"UPDATE subscriber_events SET status = '{DeliveryStatus.PURGED.value}', next_attempt_at = ?, updated_at = ? "
        f"WHERE subscriber_id = ? AND status = '{_OPEN}'", (at, at, subscriber_id)).rowcount


def purge_chosen(conn: Connection, delivery_ids: Sequence[int]) -> int:
    """Drop the deliveries of ``delivery_ids`` that are open or failed (status ``purged``: never
    delivered, no longer in the backlog); returns how many. Done ones are left as they are."""
    at = wall_now(conn)
    with transaction(conn):
        return _count_ids(
            conn, f"UPDATE subscriber_events SET status = '{DeliveryStatus.PURGED.value}', next_attempt_at = ?, "
                  f"updated_at = ? WHERE status IN ('{_OPEN}', '{_FAILED}') AND id IN ({{ids}})",
            (at, at), delivery_ids)


def _count_ids(conn: Connection, sql: str, args: tuple[Any, ...], ids: Sequence[int]) -> int:
    """Run the write ``sql`` (holding ``IN ({ids})``) over ``ids``; how many rows it changed."""
    return sum(conn.execute(chunk_sql, chunk_args).rowcount
               for chunk_sql, chunk_args in conn.dialect.in_ids(sql, args, list(ids)))


def delete_for_subscriber(conn: Connection, subscriber_id: int, *, force: bool = False) -> None:
    """Delete a subscriber's deliveries and attempts, inside the caller's transaction.

    Refused while any is open (unless ``force``) and, always, while any is in flight: deleting a
    claimed row would make its claimer's acknowledgement fail.
    """
    from .ledger import counts

    flying = leases.in_flight(conn, subscriber_id)
    if flying:
        raise UsageError(f"subscriber {subscriber_id} has {flying} deliveries in flight: try again when they "
                         "have finished (ombridge deliveries list --subscriber ID shows them)")
    open_count = counts(conn, subscriber_id=subscriber_id)[_OPEN]
    if open_count and not force:
        raise UsageError(f"subscriber {subscriber_id} has {open_count} open deliveries: "
                         "purge them first (ombridge subscriber purge) or remove with --force")
    conn.execute("DELETE FROM attempts WHERE subscriber_event_id IN "
                 "(SELECT id FROM subscriber_events WHERE subscriber_id = ?)", (subscriber_id,))
    leases.forget_subscriber(conn, subscriber_id)
    conn.execute("DELETE FROM subscriber_events WHERE subscriber_id = ?", (subscriber_id,))


def prune(conn: Connection, cutoff: float, chunk: int) -> tuple[int, int]:
    """Delete up to ``chunk`` done or purged deliveries last changed before ``cutoff``, with their
    attempts, in one transaction; returns (deliveries, attempts) deleted."""
    with transaction(conn):
        ids = [r[0] for r in conn.execute(
            f"SELECT id FROM subscriber_events WHERE status IN {_FINISHED!r} AND updated_at < ? LIMIT ?",
            (cutoff, chunk))]
        if not ids:
            return 0, 0
        attempts = _count_ids(conn, "DELETE FROM attempts WHERE subscriber_event_id IN ({ids})", (), ids)
        leases.forget(conn, ids)
        return _count_ids(conn, "DELETE FROM subscriber_events WHERE id IN ({ids})", (), ids), attempts


# -- the queue's own reads (what is due; the reads of operators are in bridge/eventcore/ledger.py) -------------


def next_due(conn: Connection, lane: Lane | None = None, after: tuple[float, int] | None = None) -> float | None:
    """When the next open delivery (of ``lane``, or of any) is due, if any; a paused
    subscriber's deliveries are not (they wait for a resume, which wakes the lanes). With
    ``after``, only of those after it in the queue, and not when a claim's lease ends (a lane
    that passes it looks again within seconds)."""
    from .pauses import held_back

    held = held_back(conn, lane)
    if held is None:
        return None
    at = wall_now(conn)
    of_lane, args = _of_lane(lane, (), after)
    where = f"FROM subscriber_events se {leases.JOIN}WHERE {of_lane}{held[0]}se.status = '{_OPEN}' "
    row = conn.execute(f"SELECT se.next_attempt_at {where}AND {leases.FREE} ORDER BY se.next_attempt_at, se.id "
                       "LIMIT 1", (*args, *held[1], at)).fetchone()
    if row is not None and row[0] <= at or after is not None:
        return None if row is None else row[0]
    # Nothing free is due: the next is the first due later, or the first claim whose lease ends
    # (claimed deliveries are due ones: this walks the claims in flight).
    lease = conn.execute(f"SELECT min(c.lease_until) {where}AND se.next_attempt_at <= ? AND {leases.HELD}",
                         (*args, *held[1], at, at)).fetchone()[0]
    return min((t for t in (None if row is None else row[0], lease) if t is not None), default=None)


def _of_lane(lane: Lane | None, skip: Sequence[int] = (),
             after: tuple[float, int] | None = None) -> tuple[str, list[Any]]:
    # The claim index starts with the lane: each lane reads only its own rows. ``after``: a
    # place in the queue (due, id) the caller's earlier claims reached. A claim does not move its
    # delivery, so the claims in flight stay at the head of the queue; a lane with hundreds in
    # flight starts after them instead of walking past them at each look (150 µs for 500 on
    # SQLite). What it then misses before that place (a claim given back, a lease run out) it
    # finds when it looks from the head again: the lane does so every few seconds at most.
    sql, args = ("se.lane = ? AND ", [lane.value]) if lane is not None else ("", [])
    if after is not None:
        sql += "(se.next_attempt_at, se.id) > (?, ?) AND "
        args += [after[0], after[1]]
    if skip:
        sql += f"se.subscriber_id NOT IN ({', '.join('?' * len(skip))}) AND "
        args += [int(s) for s in skip]
    return sql, args

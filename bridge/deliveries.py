"""Subscriber events as a durable queue: the only writer of ``subscriber_events`` and ``attempts``.

A subscriber event is ``open`` until it is ``done``, ``failed`` (retries used up) or ``purged``
(:class:`bridge.model.DeliveryStatus`). Claiming one moves its ``next_attempt_at`` past now by a
lease, names its claimer and counts the attempt *at claim time*; so a claimer that dies (kill -9
at any instant) leaves a row that is simply due again when the lease runs out (or at once, when
the next supervisor takes back a dead one's claims), and its attempt still counts. Finishing is
fenced by the attempt number: a claimer whose lease was lost and re-claimed cannot overwrite the
newer claim's outcome. Nothing is deleted on read; a row that is claimed cannot be deleted
(removing its subscriber is refused until the claim is released). Every attempt is recorded.
"""

from __future__ import annotations

import json
import sqlite3

from .errors import UsageError
from .model import ActionKind, Attempt, DeliveryStatus, Lane, Settlement
from .store import now as wall_now
from .store import transaction

# `ombridge send` enqueues through this module: typing, random and the actions are imported only
# where they are needed (see bench/bench_events.py for the startup figure).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from .actions import EventContext

LEASE_MARGIN = 30.0  # seconds a claim outlives the subscriber's own timeout
RETRY_BASE = 1.0
RETRY_CAP = 300.0

_OPEN = DeliveryStatus.OPEN.value
_FAILED = DeliveryStatus.FAILED.value
_FINISHED = (DeliveryStatus.DONE.value, DeliveryStatus.PURGED.value)  # what retention may delete


class Claimed:
    """One claimed subscriber event with what is needed to deliver it."""

    __slots__ = ("id", "attempt", "event", "subscriber_id", "action", "target", "timeout", "retries", "headers")

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

    def __repr__(self) -> str:
        return f"Claimed(id={self.id}, attempt={self.attempt}, subscriber_id={self.subscriber_id})"


class Delivery:
    """A subscriber event to create: :func:`enqueue` writes one row per delivery. A synchronized
    one is created already claimed by its sender (``claimed_by``)."""

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


def enqueue(conn: sqlite3.Connection, rows: Sequence[Delivery], at: float) -> list[int]:
    """Create one open subscriber event per row, inside the caller's transaction; returns the ids
    of the rows created already claimed (attempt 1, under a lease), in order."""
    claimed: list[int] = []
    free = [(r.event_id, r.subscriber_id, r.subscriber_topic_id, r.lane.value, at, at, at)
            for r in rows if r.claimed_by is None]
    if free:
        conn.executemany(
            "INSERT INTO subscriber_events (event_id, subscriber_id, subscriber_topic_id, lane, synchronized, status, "
            f"attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, 0, '{_OPEN}', 0, ?, ?, ?)", free)
    for r in rows:
        if r.claimed_by is not None:
            cur = conn.execute(
                "INSERT INTO subscriber_events (event_id, subscriber_id, subscriber_topic_id, lane, synchronized, "
                "status, attempts, next_attempt_at, created_at, updated_at, claimed_by) "
                f"VALUES (?, ?, ?, ?, 1, '{_OPEN}', 1, ?, ?, ?, ?)",
                (r.event_id, r.subscriber_id, r.subscriber_topic_id, r.lane.value, at + r.timeout + LEASE_MARGIN,
                 at, at, r.claimed_by))
            claimed.append(int(cur.lastrowid or 0))
    return claimed


_CLAIMED_SELECT = (
    "SELECT se.id, se.attempts, se.subscriber_id, e.id AS event_id, e.topic, e.key, e.depth, e.context, "
    "s.action, s.target, s.timeout, s.retries, s.secret_headers "
    "FROM subscriber_events se JOIN events e ON e.id = se.event_id JOIN subscribers s ON s.id = se.subscriber_id "
)


_ACTION_KINDS = {kind.value: kind for kind in ActionKind}


def _claims(rows: list[tuple[Any, ...]]) -> list[Claimed]:
    # Plain tuples in _CLAIMED_SELECT's order: a burst claims thousands of rows at a time, and
    # reading sqlite3.Row by name costs a third of building a claim.
    from .actions import EventContext

    loads = json.loads
    claimed = []
    for (se_id, attempts, subscriber_id, event_id, topic, key, depth, context, action, target, timeout, retries,
         secret_headers) in rows:
        event = EventContext(event_id, topic, None, key, depth, loads(context) if context else None)
        claimed.append(Claimed(se_id, attempts + 1, event, subscriber_id, _ACTION_KINDS[action], target, timeout,
                               retries, loads(secret_headers) if secret_headers else None))
    return claimed


def claim(conn: sqlite3.Connection, *, limit: int = 1, at: float | None = None, lane: Lane | None = None,
          owner: str | None = None) -> list[Claimed]:
    """Claim up to ``limit`` due open subscriber events (of ``lane``, or of any), oldest due
    first, for ``owner``."""
    at = wall_now() if at is None else at
    of_lane, args = _of_lane(lane)
    # A read first: a lane woken for another lane's work (or for nothing) takes no write lock.
    if conn.execute(f"SELECT 1 FROM subscriber_events se WHERE {of_lane}se.status = '{_OPEN}' "
                    "AND se.next_attempt_at <= ? LIMIT 1", (*args, at)).fetchone() is None:
        return []
    with transaction(conn):
        return _claim(conn, limit, at, lane, owner)


def _claim(conn: sqlite3.Connection, limit: int, at: float, lane: Lane | None, owner: str | None) -> list[Claimed]:
    # Inside the caller's transaction.
    of_lane, args = _of_lane(lane)
    cur = conn.cursor()
    cur.row_factory = None  # tuples (see _claims)
    rows = cur.execute(
        _CLAIMED_SELECT + f"WHERE {of_lane}se.status = '{_OPEN}' AND se.next_attempt_at <= ? "
        "ORDER BY se.next_attempt_at, se.id LIMIT ?", (*args, at, limit)
    ).fetchall()
    # Count the attempt now and hold the rows for a lease: one statement per lease length.
    by_lease: dict[float, list[int]] = {}
    for r in rows:
        by_lease.setdefault(at + r[10] + LEASE_MARGIN, []).append(r[0])  # timeout, id
    for lease, ids in by_lease.items():
        _where_ids(conn, "UPDATE subscriber_events SET attempts = attempts + 1, next_attempt_at = ?, "
                         "updated_at = ?, claimed_by = ? WHERE id IN ({ids})", (lease, at, owner), ids)
    return _claims(rows)


def _where_ids(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...], ids: Sequence[int]) -> list[Any]:
    """Run ``sql`` (with ``{ids}`` for a list of placeholders) over ``ids``, 500 at a time; the
    rows it returned (a SELECT's)."""
    rows: list[Any] = []
    for n in range(0, len(ids), 500):
        part = ids[n:n + 500]
        rows += conn.execute(sql.format(ids=",".join("?" * len(part))), (*args, *part)).fetchall()
    return rows


def retry_delay(attempt: int) -> float:
    """Capped exponential backoff with jitter before the attempt after ``attempt``."""
    import random

    return min(RETRY_CAP, RETRY_BASE * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def settle(claim: Claimed, result: Attempt) -> Settlement:
    """What an attempt's result makes of its delivery (before the fence is checked)."""
    if result.ok:
        return Settlement.DONE
    return Settlement.FAILED if claim.attempt > claim.retries else Settlement.RETRY


def finish(conn: sqlite3.Connection, done: Sequence[tuple[Claimed, Attempt]]) -> list[Settlement]:
    """Record attempts and their outcomes in one transaction; returns what each became.

    Success -> done. Failure -> open again after backoff, or failed once the subscriber's
    retries are used up (attempts > retries). A claim whose lease was taken over meanwhile
    (its attempt number is no longer current), or whose row is gone, is ``stale``: its attempt
    is recorded if the row still exists, and nothing else of the batch is affected.
    """
    if not done:
        return []
    at = wall_now()
    with transaction(conn):
        return _finish(conn, done, at)


def finish_and_claim(conn: sqlite3.Connection, done: Sequence[tuple[Claimed, Attempt]], *, limit: int,
                     lane: Lane, owner: str, wait: bool = True) -> tuple[list[Settlement], list[Claimed]]:
    """:func:`finish` ``done``, then :func:`claim` up to ``limit`` more, in one transaction: a
    lane that streams its work takes the write lock once per chunk, not twice. With
    ``wait=False``, raises :class:`bridge.store.Busy` at once (nothing done) while another
    writer holds the lock."""
    at = wall_now()
    with transaction(conn, wait=wait):
        settled = _finish(conn, done, at) if done else []
        return settled, _claim(conn, limit, at, lane, owner) if limit > 0 else []


def _finish(conn: sqlite3.Connection, done: Sequence[tuple[Claimed, Attempt]], at: float) -> list[Settlement]:
    # Inside the caller's transaction. Which claims are still current: one read, then batched
    # writes, instead of statements per row (the backsync records hundreds of Closes at a time).
    current = {(r[0], r[1]) for r in _where_ids(
        conn, f"SELECT id, attempts FROM subscriber_events WHERE status = '{_OPEN}' AND id IN ({{ids}})", (),
        [c.id for c, _ in done])}
    # Every attempt is recorded. Those of current claims that ended alike (a chunk of Closes
    # shares its times and outcome) go in with one INSERT ... SELECT over their ids, instead of
    # a row of eight values each; a stale claim's only while its row exists.
    alike: dict[tuple[Any, ...], list[int]] = {}
    stale = []
    for c, r in done:
        if (c.id, c.attempt) in current:
            alike.setdefault((r.started_at, r.ended_at, int(r.ok), r.exit_status, r.output, r.error), []).append(c.id)
        elif _exists(conn, c.id):
            stale.append((c.id, c.attempt, r.started_at, r.ended_at, int(r.ok), r.exit_status, r.output, r.error))
    for values, ids in alike.items():
        _where_ids(conn, f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) SELECT id, attempts, ?, ?, ?, ?, ?, ? "
                         "FROM subscriber_events WHERE id IN ({ids})", values, ids)
    conn.executemany(f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", stale)
    settled, succeeded, failures = [], [], []
    for c, r in done:
        if (c.id, c.attempt) not in current:
            settled.append(Settlement.STALE)
            continue
        s = settle(c, r)
        settled.append(s)
        if s is Settlement.DONE:
            succeeded.append(c.id)
        else:
            failures.append((s.value, at + retry_delay(c.attempt) if s is Settlement.RETRY else at, r.error, at,
                             c.id))
    if succeeded:  # the common case, in one statement
        _where_ids(conn, "UPDATE subscriber_events SET status = ?, next_attempt_at = ?, last_error = NULL, "
                         "updated_at = ?, claimed_by = NULL WHERE id IN ({ids})",
                   (Settlement.DONE.value, at, at), succeeded)
    conn.executemany("UPDATE subscriber_events SET status = ?, next_attempt_at = ?, last_error = ?, "
                     "updated_at = ?, claimed_by = NULL WHERE id = ?", failures)
    return settled


_ATTEMPT_COLUMNS = "subscriber_event_id, number, started_at, ended_at, ok, exit_status, output, error"


def _exists(conn: sqlite3.Connection, delivery_id: int) -> bool:
    # A stale claim's attempt is still recorded, unless its row is gone (its subscriber removed).
    return conn.execute("SELECT 1 FROM subscriber_events WHERE id = ?", (delivery_id,)).fetchone() is not None


def release(conn: sqlite3.Connection, claims: Sequence[Claimed], at: float | None = None) -> None:
    """Give back claims that were never attempted (the attempt is not counted), due at ``at``."""
    at = wall_now() if at is None else at
    with transaction(conn):
        conn.executemany(
            "UPDATE subscriber_events SET attempts = attempts - 1, next_attempt_at = ?, claimed_by = NULL, "
            f"updated_at = ? WHERE id = ? AND attempts = ? AND status = '{_OPEN}'",
            [(at, at, c.id, c.attempt) for c in claims])


def reclaim_abandoned(conn: sqlite3.Connection, owner_prefix: str, keep: str) -> int:
    """Make due now the claims of owners named ``owner_prefix*`` other than ``keep``: the claims
    of a supervisor that died (only one runs per home). Their attempts stay counted."""
    at = wall_now()
    with transaction(conn):
        return conn.execute(
            "UPDATE subscriber_events SET next_attempt_at = ?, claimed_by = NULL, updated_at = ? "
            f"WHERE status = '{_OPEN}' AND next_attempt_at > ? AND claimed_by LIKE ? AND claimed_by != ?",
            (at, at, at, owner_prefix + "%", keep)).rowcount


def retry_failed(conn: sqlite3.Connection, subscriber_id: int | None = None, event_id: int | None = None,
                 delivery_id: int | None = None) -> int:
    """Put failed deliveries back to open, due now, with a fresh count; returns how many."""
    where, args = _equal([("status", _FAILED), ("subscriber_id", subscriber_id), ("event_id", event_id),
                          ("id", delivery_id)])
    at = wall_now()
    with transaction(conn):
        return conn.execute(
            f"UPDATE subscriber_events SET status = '{_OPEN}', attempts = 0, next_attempt_at = ?, updated_at = ?, "
            f"claimed_by = NULL WHERE {' AND '.join(where)}", (at, at, *args)).rowcount


def purge(conn: sqlite3.Connection, subscriber_id: int) -> int:
    """Drop a subscriber's open deliveries (status ``purged``) inside the caller's transaction;
    returns how many. A delivery in flight finishes, but its outcome no longer changes the row."""
    at = wall_now()
    return conn.execute(
        f"UPDATE subscriber_events SET status = '{DeliveryStatus.PURGED.value}', next_attempt_at = ?, updated_at = ?, "
        f"claimed_by = NULL WHERE subscriber_id = ? AND status = '{_OPEN}'", (at, at, subscriber_id)).rowcount


def in_flight(conn: sqlite3.Connection, subscriber_id: int) -> int:
    """How many of a subscriber's deliveries are claimed under a lease that has not run out."""
    return conn.execute(
        f"SELECT count(*) FROM subscriber_events WHERE subscriber_id = ? AND status = '{_OPEN}' "
        "AND claimed_by IS NOT NULL AND next_attempt_at > ?", (subscriber_id, wall_now())).fetchone()[0]


def delete_for_subscriber(conn: sqlite3.Connection, subscriber_id: int, *, force: bool = False) -> None:
    """Delete a subscriber's deliveries and attempts, inside the caller's transaction.

    Refused while any is open (unless ``force``) and, always, while any is in flight: deleting a
    claimed row would make its claimer's acknowledgement fail.
    """
    flying = in_flight(conn, subscriber_id)
    if flying:
        raise UsageError(f"subscriber {subscriber_id} has {flying} deliveries in flight: try again when they "
                         "have finished (ombridge deliveries list --subscriber ID shows them)")
    open_count = counts(conn, subscriber_id=subscriber_id)[_OPEN]
    if open_count and not force:
        raise UsageError(f"subscriber {subscriber_id} has {open_count} open deliveries: "
                         "purge them first (ombridge subscriber purge) or remove with --force")
    conn.execute("DELETE FROM attempts WHERE subscriber_event_id IN "
                 "(SELECT id FROM subscriber_events WHERE subscriber_id = ?)", (subscriber_id,))
    conn.execute("DELETE FROM subscriber_events WHERE subscriber_id = ?", (subscriber_id,))


def prune(conn: sqlite3.Connection, cutoff: float, chunk: int) -> tuple[int, int]:
    """Delete up to ``chunk`` done or purged deliveries last changed before ``cutoff``, with their
    attempts, in one transaction; returns (deliveries, attempts) deleted."""
    with transaction(conn):
        ids = [r[0] for r in conn.execute(
            f"SELECT id FROM subscriber_events WHERE status IN {_FINISHED!r} AND updated_at < ? LIMIT ?",
            (cutoff, chunk))]
        if not ids:
            return 0, 0
        marks = ",".join("?" * len(ids))
        attempts = conn.execute(f"DELETE FROM attempts WHERE subscriber_event_id IN ({marks})", ids).rowcount
        return conn.execute(f"DELETE FROM subscriber_events WHERE id IN ({marks})", ids).rowcount, attempts


# -- reading ------------------------------------------------------------------------------------


def next_due(conn: sqlite3.Connection, lane: Lane | None = None) -> float | None:
    """When the next open delivery (of ``lane``, or of any) is due, if any."""
    of_lane, args = _of_lane(lane)
    return conn.execute(f"SELECT min(se.next_attempt_at) FROM subscriber_events se "
                        f"WHERE {of_lane}se.status = '{_OPEN}'", args).fetchone()[0]


def _of_lane(lane: Lane | None) -> tuple[str, list[str]]:
    # The claim index starts with the lane: each lane reads only its own rows.
    return ("se.lane = ? AND ", [lane.value]) if lane is not None else ("", [])


def _equal(pairs: list[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """``column = ?`` conditions and their arguments for the pairs whose value is not None."""
    given = [(column, value) for column, value in pairs if value is not None]
    return [f"{column} = ?" for column, _ in given], [value for _, value in given]


def list_deliveries(conn: sqlite3.Connection, status: DeliveryStatus | str | None = None,
                    subscriber_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Subscriber events, newest first, with the event's topic and key and the last error."""
    if status is not None:
        try:
            status = DeliveryStatus(status).value
        except ValueError:
            raise UsageError(f"bad status {status!r}: one of {', '.join(s.value for s in DeliveryStatus)}") from None
    where, args = _equal([("se.status", status), ("se.subscriber_id", subscriber_id)])
    sql = ("SELECT se.id, se.event_id, e.topic, e.key, se.subscriber_id, s.description AS subscriber, "
           "se.status, se.attempts, se.next_attempt_at, se.last_error, se.created_at, se.updated_at "
           "FROM subscriber_events se JOIN events e ON e.id = se.event_id "
           "JOIN subscribers s ON s.id = se.subscriber_id "
           + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY se.id DESC LIMIT ?")
    return [dict(r) for r in conn.execute(sql, (*args, limit))]


def show(conn: sqlite3.Connection, delivery_id: int) -> dict[str, Any]:
    """One delivery with its event and every attempt (start, end, exit status, output tail, error)."""
    from .errors import NotFound

    row = conn.execute(
        "SELECT se.*, e.topic, e.key, e.context, e.created_at AS event_created_at, s.description AS subscriber, "
        "s.action, s.target, s.retries FROM subscriber_events se JOIN events e ON e.id = se.event_id "
        "JOIN subscribers s ON s.id = se.subscriber_id WHERE se.id = ?", (delivery_id,)).fetchone()
    if row is None:
        raise NotFound(f"no delivery {delivery_id} (ombridge deliveries list shows them)")
    attempts = conn.execute(
        "SELECT number, started_at, ended_at, ok, exit_status, output, error FROM attempts "
        "WHERE subscriber_event_id = ? ORDER BY number, id", (delivery_id,)).fetchall()
    return {**dict(row), "key": json.loads(row["key"]), "attempt_log": [dict(a) for a in attempts]}


def counts(conn: sqlite3.Connection, *, subscriber_id: int | None = None) -> dict[str, int]:
    """How many deliveries there are in each status (of one subscriber, or of all)."""
    where, args = _equal([("subscriber_id", subscriber_id)])
    result = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    for status, count in conn.execute(
            "SELECT status, count(*) FROM subscriber_events " + (f"WHERE {' AND '.join(where)} " if where else "")
            + "GROUP BY status", args):
        result[status] = count
    return result


# The counts below read the partial indexes of open and of failed deliveries (store migration 7),
# named, since SQLite would rather scan another one that covers every row: `status` and the
# console's refresh ask for the backlog all the time, while done rows pile up.


def backlog(conn: sqlite3.Connection) -> dict[str, int]:
    """How many deliveries are open and failed."""
    return {
        _OPEN: conn.execute(
            f"SELECT count(*) FROM subscriber_events INDEXED BY subscriber_events_open WHERE status = '{_OPEN}'"
        ).fetchone()[0],
        _FAILED: conn.execute(
            f"SELECT count(*) FROM subscriber_events INDEXED BY subscriber_events_failed WHERE status = '{_FAILED}'"
        ).fetchone()[0],
    }


def oldest_open(conn: sqlite3.Connection) -> float | None:
    """When the oldest open delivery was created, if any."""
    return conn.execute(f"SELECT min(created_at) FROM subscriber_events WHERE status = '{_OPEN}'").fetchone()[0]


def attempt_totals(conn: sqlite3.Connection) -> dict[bool, int]:
    """Recorded attempts by result (True: succeeded)."""
    totals = {True: 0, False: 0}
    for ok, count in conn.execute("SELECT ok, count(*) FROM attempts GROUP BY ok"):
        totals[bool(ok)] = count
    return totals


def per_subscriber(conn: sqlite3.Connection) -> dict[int, dict[str, int]]:
    """Open and failed deliveries of every subscriber that has any."""
    result: dict[int, dict[str, int]] = {}
    for sid, status, count in conn.execute(
            "SELECT subscriber_id, status, count(*) FROM subscriber_events "
            f"WHERE status IN ('{_OPEN}', '{_FAILED}') GROUP BY subscriber_id, status"):
        result.setdefault(sid, {_OPEN: 0, _FAILED: 0})[status] = count
    return result


def per_event(conn: sqlite3.Connection, event_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """How many deliveries each of ``event_ids`` has, and how many are open."""
    ids = list(event_ids)
    result = {i: {"deliveries": 0, _OPEN: 0} for i in ids}
    if ids:
        for event_id, total, open_count in conn.execute(
                f"SELECT event_id, count(*), sum(status = '{_OPEN}') FROM subscriber_events "
                f"WHERE event_id IN ({','.join('?' * len(ids))}) GROUP BY event_id", ids):
            result[event_id] = {"deliveries": total, _OPEN: open_count}
    return result


# -- reads of the operator console (bridge/web/console) -----------------------------------------


def of_events(conn: sqlite3.Connection, event_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The deliveries of each of ``event_ids`` (subscriber, status, attempts, last error)."""
    result: dict[int, list[dict[str, Any]]] = {i: [] for i in event_ids}
    if event_ids:
        for r in conn.execute(
                "SELECT se.id, se.event_id, se.subscriber_id, s.description AS subscriber, se.status, se.attempts, "
                "se.last_error, se.updated_at FROM subscriber_events se JOIN subscribers s ON s.id = se.subscriber_id "
                f"WHERE se.event_id IN ({','.join('?' * len(event_ids))}) ORDER BY se.id", list(event_ids)):
            result[r["event_id"]].append(dict(r))
    return result


def _first_id_from(conn: sqlite3.Connection, table: str, column: str, at: float) -> int | None:
    # Rows are inserted in time order (a batch may be a few seconds out of order), so the first row
    # at or after ``at`` is found by bisecting the rowid: a few index lookups instead of a scan of
    # millions of rows, with no index on the time column.
    lo, hi = conn.execute(f"SELECT min(id), max(id) FROM {table}").fetchone()
    if lo is None:
        return None
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(f"SELECT id, {column} FROM {table} WHERE id >= ? ORDER BY id LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= at:
            hi = mid
        else:
            lo = row[0] + 1
    return lo


def activity(conn: sqlite3.Connection, since: float, until: float, step: float = 60.0) -> dict[str, Any]:
    """Attempts per ``step`` (``succeeded`` / ``failures``) and the open backlog at the end of each step,
    from ``since`` to ``until``: the console's chart.

    The backlog is walked back from today's open count: each step's end had the open deliveries
    of the next step's end, minus those created in the next step, plus those finished in it
    (done, failed or purged; a finished row's ``next_attempt_at`` is when it finished). A failed
    delivery that was retried counts as open since it failed.
    """
    n = max(1, int((until - since + step - 1) // step))
    succeeded, failures, created, finished = [0] * n, [0] * n, [0] * n, [0] * n

    def add(into: list[int], bucket: int, count: int) -> None:
        if 0 <= bucket < n:
            into[bucket] += count

    first = _first_id_from(conn, "attempts", "ended_at", since)
    if first is not None:
        for bucket, ok, count in conn.execute(
                "SELECT CAST((ended_at - ?) / ? AS INTEGER), ok, count(*) FROM attempts "
                "WHERE id >= ? AND ended_at >= ? GROUP BY 1, 2", (since, step, first, since)):
            add(succeeded if ok else failures, bucket, count)
    first = _first_id_from(conn, "subscriber_events", "created_at", since)
    if first is not None:
        for bucket, count in conn.execute(
                "SELECT CAST((created_at - ?) / ? AS INTEGER), count(*) FROM subscriber_events "
                "WHERE id >= ? AND created_at >= ? GROUP BY 1", (since, step, first, since)):
            add(created, bucket, count)
    # A finished row's next_attempt_at is when it finished (finish and purge set both): so the
    # index of finished rows finds the window's, instead of a scan of every row.
    for bucket, count in conn.execute(
            "SELECT CAST((next_attempt_at - ?) / ? AS INTEGER), count(*) FROM subscriber_events "
            f"WHERE status != '{_OPEN}' AND next_attempt_at >= ? GROUP BY 1", (since, step, since)):
        add(finished, bucket, count)
    backlog_at = [0] * n
    level = backlog(conn)[_OPEN]
    for i in range(n - 1, -1, -1):
        backlog_at[i] = max(0, level)
        level = level - created[i] + finished[i]
    return {"since": since, "until": until, "step": step, "succeeded": succeeded, "failures": failures,
            "backlog": backlog_at}

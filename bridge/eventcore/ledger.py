"""The delivery ledger: what the queue holds and what each delivery's attempts did, read only.

:mod:`bridge.eventcore.deliveries` is the queue and the only writer of ``subscriber_events`` and
``attempts``; this module only reads them, for the operator: the listings and the history of
``ombridge deliveries``, the backlog of ``status``, the metrics, and the console's pages and chart.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError
from ..model import DeliveryStatus
from ..store import Connection
from . import claims

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_OPEN = DeliveryStatus.OPEN.value
_FAILED = DeliveryStatus.FAILED.value


def equal_conditions(pairs: list[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """``column = ?`` conditions and their arguments for the pairs whose value is not None."""
    given = [(column, value) for column, value in pairs if value is not None]
    return [f"{column} = ?" for column, _ in given], [value for _, value in given]


def list_deliveries(conn: Connection, status: DeliveryStatus | str | None = None,
                    subscriber_id: int | None = None, limit: int = 100, *, before: int | None = None,
                    after: int | None = None) -> list[dict[str, Any]]:
    """Subscriber events, newest first, with the event's topic and key and the last error: the
    newest ``limit``, or those with ids below ``before`` (the next page, older), or the ``limit``
    just above ``after`` (the page before, newer). Keyset paging: every page costs the same
    however deep it is (the index ``subscriber_events_subscriber`` serves a subscriber's)."""
    if status is not None:
        try:
            status = DeliveryStatus(status).value
        except ValueError:
            raise UsageError(f"bad status {status!r}: one of {', '.join(s.value for s in DeliveryStatus)}") from None
    where, args = equal_conditions([("se.status", status), ("se.subscriber_id", subscriber_id)])
    if before is not None:
        where, args = [*where, "se.id < ?"], [*args, before]
    if after is not None:
        where, args = [*where, "se.id > ?"], [*args, after]
    sql = ("SELECT se.id, se.event_id, e.topic, e.key, se.subscriber_id, s.description AS subscriber, "
           "s.system AS subscriber_system, s.action AS subscriber_action, "
           f"se.status, {claims.VIEW}, se.last_error, se.created_at, se.updated_at "
           "FROM subscriber_events se JOIN events e ON e.id = se.event_id "
           f"JOIN subscribers s ON s.id = se.subscriber_id {claims.JOIN}"
           + (f"WHERE {' AND '.join(where)} " if where else "")
           + f"ORDER BY se.id {'ASC' if after is not None else 'DESC'} LIMIT ?")
    rows = [dict(r) for r in conn.execute(sql, (*args, limit))]
    return rows[::-1] if after is not None else rows


def show(conn: Connection, delivery_id: int) -> dict[str, Any]:
    """One delivery with its event and every attempt (start, end, exit status, output tail, error)."""
    from ..errors import NotFound

    row = conn.execute(
        "SELECT se.id, se.event_id, se.subscriber_id, se.subscriber_topic_id, se.synchronized, se.status, "
        f"{claims.VIEW}, se.last_error, se.created_at, se.updated_at, se.lane, e.topic, e.key, e.context, "
        "e.created_at AS event_created_at, s.description AS subscriber, s.action, s.target, s.retries "
        "FROM subscriber_events se JOIN events e ON e.id = se.event_id JOIN subscribers s ON s.id = se.subscriber_id "
        f"{claims.JOIN}WHERE se.id = ?", (delivery_id,)).fetchone()
    if row is None:
        raise NotFound(f"no delivery {delivery_id} (ombridge deliveries list shows them)")
    attempts = conn.execute(
        "SELECT number, started_at, ended_at, ok, exit_status, output, error FROM attempts "
        "WHERE subscriber_event_id = ? ORDER BY started_at, id", (delivery_id,)).fetchall()
    return {**dict(row), "key": json.loads(row["key"]), "context": json.loads(row["context"]) if row["context"] else None,
            "attempt_log": numbered(dict(a) for a in attempts)}


def numbered(attempts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A delivery's attempts (in time order) numbered once for the delivery (``n``: 1, 2, 3 ...)
    and by round (``round``): a retry of a failed delivery starts its count again (``number``,
    the attempt within its round), and so a new round."""
    log: list[dict[str, Any]] = []
    for a in attempts:
        new_round = not log or a["number"] <= log[-1]["number"]
        log.append({**a, "n": len(log) + 1, "round": (log[-1]["round"] if log else 0) + new_round})
    return log


def counts(conn: Connection, *, subscriber_id: int | None = None) -> dict[str, int]:
    """How many deliveries there are in each status (of one subscriber, or of all)."""
    where, args = equal_conditions([("subscriber_id", subscriber_id)])
    result = dict.fromkeys((s.value for s in DeliveryStatus), 0)
    for status, count in conn.execute(
            "SELECT status, count(*) FROM subscriber_events " + (f"WHERE {' AND '.join(where)} " if where else "")
            + "GROUP BY status", args):
        result[status] = count
    return result


# The counts below read the partial indexes of open and of failed deliveries (store migration 7),
# named, since SQLite would rather scan another one that covers every row: `status` and the
# console's refresh ask for the backlog all the time, while done rows pile up.


def backlog(conn: Connection) -> dict[str, int]:
    """How many deliveries are open and failed."""
    return {
        _OPEN: conn.execute(
            f"SELECT count(*) FROM subscriber_events{conn.dialect.indexed_by('subscriber_events_open')} "
            f"WHERE status = '{_OPEN}'"
        ).fetchone()[0],
        _FAILED: conn.execute(
            f"SELECT count(*) FROM subscriber_events{conn.dialect.indexed_by('subscriber_events_failed')} "
            f"WHERE status = '{_FAILED}'"
        ).fetchone()[0],
    }


def oldest_open(conn: Connection) -> float | None:
    """When the oldest open delivery was created, if any."""
    return conn.execute(f"SELECT min(created_at) FROM subscriber_events WHERE status = '{_OPEN}'").fetchone()[0]


def attempt_totals(conn: Connection) -> dict[bool, int]:
    """Recorded attempts by result (True: succeeded)."""
    totals = {True: 0, False: 0}
    for ok, count in conn.execute("SELECT ok, count(*) FROM attempts GROUP BY ok"):
        totals[bool(ok)] = count
    return totals


def per_subscriber(conn: Connection) -> dict[int, dict[str, int]]:
    """Open and failed deliveries of every subscriber. Counted a subscriber and a status at a time,
    each a range of the (subscriber, status) index: as long as the backlog, however many done rows
    pile up (one ``GROUP BY`` over both statuses read the whole index)."""
    return {sid: {_OPEN: open_count, _FAILED: failed} for sid, open_count, failed in conn.execute(
        f"SELECT s.id, (SELECT count(*) FROM subscriber_events WHERE subscriber_id = s.id AND status = '{_OPEN}'), "
        f"(SELECT count(*) FROM subscriber_events WHERE subscriber_id = s.id AND status = '{_FAILED}') "
        "FROM subscribers s")}


def per_event(conn: Connection, event_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """How many deliveries each of ``event_ids`` has, and how many are open."""
    ids = list(event_ids)
    result = {i: {"deliveries": 0, _OPEN: 0} for i in ids}
    if ids:
        for event_id, total, open_count in conn.execute(
                f"SELECT event_id, count(*), count(*) FILTER (WHERE status = '{_OPEN}') FROM subscriber_events "
                f"WHERE event_id IN ({','.join('?' * len(ids))}) GROUP BY event_id", ids):
            result[event_id] = {"deliveries": total, _OPEN: open_count}
    return result


# -- the operator console's reads (bridge/web/console) -------------------------------------------


def of_events(conn: Connection, event_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The deliveries of each of ``event_ids`` (subscriber, status, attempts, last error)."""
    result: dict[int, list[dict[str, Any]]] = {i: [] for i in event_ids}
    if event_ids:
        for r in conn.execute(
                "SELECT se.id, se.event_id, se.subscriber_id, s.description AS subscriber, s.system AS subscriber_system, "
                "s.action AS subscriber_action, se.status, se.attempts, "
                "se.last_error, se.updated_at FROM subscriber_events se JOIN subscribers s ON s.id = se.subscriber_id "
                f"WHERE se.event_id IN ({','.join('?' * len(event_ids))}) ORDER BY se.id", list(event_ids)):
            result[r["event_id"]].append(dict(r))
    return result


def _first_id_from(conn: Connection, table: str, column: str, at: float) -> int | None:
    # Rows are inserted in time order (a batch may be a few seconds out of order), so the first row
    # at or after ``at`` is found by bisecting the rowid: a few index lookups instead of a scan of
    # millions of rows, with no index on the time column.
    # (min and max asked apart: each is then one lookup at an end of the primary key, where
    # SQLite reads a whole index to answer both in one query)
    lo = conn.execute(f"SELECT min(id) FROM {table}").fetchone()[0]
    hi = conn.execute(f"SELECT max(id) FROM {table}").fetchone()[0]
    if lo is None or hi is None:
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


def activity(conn: Connection, since: float, until: float, step: float = 60.0) -> dict[str, Any]:
    """Attempts per ``step`` (``succeeded`` / ``failures``) and the open backlog at the end of each step,
    from ``since`` to ``until``: the console's chart.

    The backlog is walked back from today's open count: each step's end had the open deliveries
    of the next step's end, minus those created in the next step, plus those finished in it
    (done, failed or purged; a finished row's ``next_attempt_at`` is when it finished). A failed
    delivery that was retried counts as open since it failed.
    """
    n = max(1, int((until - since + step - 1) // step))
    whole = conn.dialect.bucket  # the SQL of a bucket number
    succeeded, failures, created, finished = [0] * n, [0] * n, [0] * n, [0] * n

    def add(into: list[int], bucket: int, count: int) -> None:
        if 0 <= bucket < n:
            into[bucket] += count

    first = _first_id_from(conn, "attempts", "ended_at", since)
    if first is not None:
        for bucket, ok, count in conn.execute(
                f"SELECT {whole('(ended_at - ?) / ?')}, ok, count(*) FROM attempts "
                "WHERE id >= ? AND ended_at >= ? GROUP BY 1, 2", (since, step, first, since)):
            add(succeeded if ok else failures, bucket, count)
    first = _first_id_from(conn, "subscriber_events", "created_at", since)
    if first is not None:
        for bucket, count in conn.execute(
                f"SELECT {whole('(created_at - ?) / ?')}, count(*) FROM subscriber_events "
                "WHERE id >= ? AND created_at >= ? GROUP BY 1", (since, step, first, since)):
            add(created, bucket, count)
    # A finished row's next_attempt_at is when it finished (finish and purge set both): so the
    # index of finished rows finds the window's, instead of a scan of every row.
    for bucket, count in conn.execute(
            f"SELECT {whole('(next_attempt_at - ?) / ?')}, count(*) FROM subscriber_events "
            f"WHERE status != '{_OPEN}' AND next_attempt_at >= ? GROUP BY 1", (since, step, since)):
        add(finished, bucket, count)
    backlog_at = [0] * n
    level = backlog(conn)[_OPEN]
    for i in range(n - 1, -1, -1):
        backlog_at[i] = max(0, level)
        level = level - created[i] + finished[i]
    return {"since": since, "until": until, "step": step, "succeeded": succeeded, "failures": failures,
            "backlog": backlog_at}

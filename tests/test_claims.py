"""Claims kept apart from the queue row (issue 33, bridge/eventcore/claims.py): the row of a
delivery is written when sent and when its outcome is recorded, never by a claim; what a claim
promised still holds (its attempt counted at claim time, leases, fencing, give-backs at their
place in the queue). Real SQLite files, and PostgreSQL with `both_stores`."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
from queue_support import DELIVERIES

from bridge import store
from bridge.eventcore import catalog, claims, deliveries, events, ledger
from bridge.home import Home
from bridge.model import ActionKind, Attempt, Lane, Settlement
from bridge.store import sqlschema


def _due(conn: Any, n: int, retries: int = 3) -> int:
    catalog.add_topic(conn, "t/x", ["K"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true", retries=retries)
    catalog.attach_topic(conn, sid, "t/x")
    events.send_many(conn, [("t/x", {"K": str(i)}) for i in range(n)])
    return sid


def _rows(conn: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute("SELECT id, status, attempts, next_attempt_at, updated_at, last_error "
                                           "FROM subscriber_events ORDER BY id")]


def _ok(c: deliveries.Claimed) -> Attempt:
    return Attempt(ok=True, started_at=1.0, ended_at=2.0)


def _failed(c: deliveries.Claimed) -> Attempt:
    return Attempt(ok=False, started_at=1.0, ended_at=2.0, error="exit status 1", exit_status=1)


def _seen(conn: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(f"SELECT id, status, attempts, claimed_by FROM {DELIVERIES} ORDER BY id")]


@pytest.mark.both_stores
def test_a_claim_leaves_the_queue_row_as_it_was_and_the_outcome_writes_it_once(conn: Any) -> None:
    _due(conn, 3)
    before = _rows(conn)
    taken = deliveries.claim(conn, limit=3, lane=Lane.ACTIONS, owner="supervisor:a#1")
    assert [c.attempt for c in taken] == [1, 1, 1]
    assert _rows(conn) == before  # not a column of the queue row moved
    assert [r[1:] for r in _seen(conn)] == [("open", 1, "supervisor:a#1")] * 3  # counted at claim time, held
    assert claims.in_flight(conn, taken[0].subscriber_id) == 3
    assert deliveries.claim(conn, limit=3, lane=Lane.ACTIONS, owner="supervisor:b#2") == []  # held: nobody else's
    assert deliveries.next_due(conn, Lane.ACTIONS) == pytest.approx(store.now() + 60 + deliveries.LEASE_MARGIN, abs=5)

    assert deliveries.finish(conn, [(c, _ok(c)) for c in taken]) == [Settlement.DONE] * 3
    assert [(r[1], r[2]) for r in _rows(conn)] == [("done", 1)] * 3
    assert [r[1:] for r in _seen(conn)] == [("done", 1, None)] * 3
    assert claims.in_flight(conn, taken[0].subscriber_id) == 0
    assert deliveries.finish(conn, [(taken[0], _ok(taken[0]))]) == [Settlement.STALE]  # recorded once


@pytest.mark.both_stores
def test_a_lease_that_ran_out_is_claimed_again_its_attempt_counted_and_the_old_claim_is_fenced(conn: Any) -> None:
    _due(conn, 1)
    (first,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:a#1")
    conn.execute("UPDATE claims SET lease_until = 0")  # (the claimer died; its lease ran out)
    (second,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:b#2")
    assert (second.id, second.attempt) == (first.id, 2)  # the dead claimer's attempt counts
    assert deliveries.finish(conn, [(first, _failed(first))]) == [Settlement.STALE]  # a lost claim writes nothing
    assert _seen(conn) == [(first.id, "open", 2, "supervisor:b#2")]
    assert deliveries.finish(conn, [(second, _failed(second))]) == [Settlement.RETRY]
    row = conn.execute("SELECT status, attempts, last_error, next_attempt_at FROM subscriber_events").fetchone()
    assert tuple(row)[:3] == ("open", 2, "exit status 1") and row[3] > store.now()  # backoff
    # the attempts of both claims are recorded, the stale one's too
    assert [tuple(r) for r in conn.execute("SELECT number, ok FROM attempts ORDER BY id")] == [(1, 0), (2, 0)]


@pytest.mark.both_stores
def test_retries_used_up_fail_and_a_retry_starts_a_new_round_at_once(conn: Any) -> None:
    _due(conn, 1, retries=0)
    (c,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:a#1")
    assert deliveries.finish(conn, [(c, _failed(c))]) == [Settlement.FAILED]
    assert deliveries.retry_failed(conn, delivery_ids=[c.id]) == 1
    (again,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:a#1")  # due now, though its lease is not over
    assert (again.id, again.attempt) == (c.id, 1)  # the count starts again
    assert deliveries.finish(conn, [(again, _ok(again))]) == [Settlement.DONE]


@pytest.mark.both_stores
def test_given_back_claims_are_free_at_once_at_their_place_in_the_queue(conn: Any) -> None:
    _due(conn, 4)
    taken = deliveries.claim(conn, limit=2, lane=Lane.ACTIONS, owner="supervisor:a#1")
    deliveries.release(conn, taken[:1])  # never attempted: not counted
    deliveries.due_again(conn, taken[1:])  # a stream that failed: it may have run, counted
    assert [r[1:] for r in _seen(conn)] == [("open", 0, None), ("open", 1, None), ("open", 0, None),
                                            ("open", 0, None)]
    again = deliveries.claim(conn, limit=4, lane=Lane.ACTIONS, owner="supervisor:b#2")
    assert [(c.id, c.attempt) for c in again] == [(taken[0].id, 1), (taken[1].id, 2),
                                                  (taken[1].id + 1, 1), (taken[1].id + 2, 1)]


@pytest.mark.both_stores
def test_a_dead_owners_claims_are_taken_over_and_nobody_elses(conn: Any) -> None:
    _due(conn, 3)
    deliveries.claim(conn, limit=2, lane=Lane.ACTIONS, owner="supervisor:a#1")
    deliveries.claim(conn, limit=1, lane=Lane.ACTIONS, owner="supervisor:b#2")
    assert claims.by_owner(conn) == {"supervisor:a#1": 2, "supervisor:b#2": 1}
    assert claims.reclaim_abandoned(conn, "supervisor:a#", keep="supervisor:a#9") == 2
    assert claims.by_owner(conn) == {"supervisor:b#2": 1}
    assert [c.attempt for c in deliveries.claim(conn, limit=3, lane=Lane.ACTIONS, owner="supervisor:c#3")] == [2, 2]


@pytest.mark.both_stores
def test_the_ledger_shows_a_claimed_delivery_as_before(conn: Any) -> None:
    _due(conn, 1)
    (c,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:a#1")
    (listed,) = ledger.list_deliveries(conn)
    shown = ledger.show(conn, c.id)
    for d in (listed, shown):
        assert (d["status"], d["attempts"], d["claimed_by"]) == ("open", 1, "supervisor:a#1")
        assert d["next_attempt_at"] > store.now() + 60  # while claimed: the end of its lease


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_a_claim_from_an_old_read_is_refused_when_the_count_moved_on(conn: Any) -> None:
    # Node b read the delivery free (attempt 0 counted), then node a claimed and finished it
    # before b wrote its claim: b's claim must not take it (it would run a Close twice).
    _due(conn, 1)
    (c,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:a#1")
    deliveries.finish(conn, [(c, _ok(c))])
    with store.transaction(conn):
        assert claims.take(conn, [(c.id, 1, store.now() + 60)], "supervisor:b#2") == set()
    assert _seen(conn) == [(c.id, "done", 1, None)]


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_two_nodes_claiming_at_once_take_disjoint_deliveries_without_waiting(home: Home, conn: Any) -> None:
    _due(conn, 10)
    other = store.connect(home)
    theirs: list[deliveries.Claimed] = []
    try:
        with store.transaction(conn):  # the first claimer's candidates stay locked until it commits
            mine = deliveries._claim(conn, 6, store.now(), Lane.ACTIONS, "supervisor:a#1")
            t = threading.Thread(target=lambda: theirs.extend(
                deliveries.claim(other, limit=10, lane=Lane.ACTIONS, owner="supervisor:b#2")))
            t.start()
            t.join(10)
            assert not t.is_alive()  # it did not wait for the first
        assert len(mine) == 6 and len(theirs) == 4 and not {c.id for c in mine} & {c.id for c in theirs}
    finally:
        other.close()


@pytest.mark.sqlite_only
def test_a_store_of_schema_15_keeps_its_claims_in_flight(home: Home, conn: sqlite3.Connection) -> None:
    _due(conn, 3)
    taken = deliveries.claim(conn, limit=2, lane=Lane.ACTIONS, owner="supervisor:a#1")
    deliveries.finish(conn, [(taken[1], _ok(taken[1]))])
    lease = conn.execute("SELECT lease_until FROM claims WHERE delivery_id = ?", (taken[0].id,)).fetchone()[0]
    # Back to schema 15: the claim in the queue row (attempts counted, due at the lease's end).
    conn.execute("ALTER TABLE subscriber_events ADD COLUMN claimed_by TEXT")
    conn.execute("UPDATE subscriber_events SET claimed_by = 'supervisor:a#1', attempts = 1, next_attempt_at = ? "
                 "WHERE id = ?", (lease, taken[0].id))
    conn.execute("DROP TABLE claims")
    conn.execute("PRAGMA user_version = 15")
    conn.close()
    migrated = store.connect(home)
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == sqlschema.SCHEMA_VERSION == 16
    assert [tuple(r) for r in migrated.execute("SELECT delivery_id, attempt, owner, lease_until FROM claims")] == \
           [(taken[0].id, 1, "supervisor:a#1", lease)]
    assert [r[1:] for r in _seen(migrated)] == [("open", 1, "supervisor:a#1"), ("done", 1, None), ("open", 0, None)]
    assert claims.reclaim_abandoned(migrated, "supervisor:a#", keep="") == 1
    again = deliveries.claim(migrated, limit=3, lane=Lane.ACTIONS, owner="supervisor:b#2")
    assert [(c.id, c.attempt) for c in again] == [(taken[0].id, 2), (taken[1].id + 1, 1)]  # at its turn, counted
    migrated.close()


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_an_outcome_that_began_before_a_takeover_committed_is_fenced(home: Home, conn: Any) -> None:
    # Claimer a's lease ran out and node b claimed the delivery again; a's outcome arrives while
    # b's claim is not committed yet. It must wait for it and then be stale, not overwrite it.
    from conftest import wait_for

    _due(conn, 1)
    (first,) = deliveries.claim(conn, lane=Lane.ACTIONS, owner="supervisor:a#1")
    conn.execute("UPDATE claims SET lease_until = 0")
    b, watcher = store.connect(home), store.connect(home)
    settled: list[list[Settlement]] = []
    try:
        with store.transaction(b):
            (second,) = deliveries._claim(b, 1, store.now(), Lane.ACTIONS, "supervisor:b#2")
            t = threading.Thread(target=lambda: settled.append(deliveries.finish(conn, [(first, _failed(first))])))
            t.start()
            wait_for(lambda: watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                             "AND datname = current_database()").fetchone()[0] == 1,
                     what="a's outcome waiting for b's claim")
        t.join(10)
        assert settled == [[Settlement.STALE]]
        assert deliveries.finish(b, [(second, _ok(second))]) == [Settlement.DONE]
        assert _seen(conn) == [(first.id, "done", 2, None)]
    finally:
        b.close()
        watcher.close()

"""The event core through the library: topics, matching, filters, send, sync delivery, loops."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import snapshot

from bridge import store
from bridge.delivery import backsync, sending
from bridge.errors import NotFound, StoreError, UsageError
from bridge.eventcore import catalog, deliveries, events, ledger
from bridge.home import Home
from bridge.model import ActionKind
from bridge.store import sqlschema

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)


def listen(conn: sqlite3.Connection, pattern: str, command: str = "true", sync: bool = False,
           **options) -> int:
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, command, **options)
    catalog.attach_topic(conn, sid, pattern, sync)
    return sid


def open_for(conn: sqlite3.Connection, event_id: int) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT subscriber_id FROM subscriber_events WHERE event_id = ? ORDER BY subscriber_id", (event_id,))]


@pytest.fixture
def topics(conn: sqlite3.Connection) -> sqlite3.Connection:
    for name in ("task/add", "task/change", "task/x/y", "comment/task/reply", "request/task/connect"):
        catalog.add_topic(conn, name, ["APPC", "TASK"] if name.startswith("task/") else [])
    return conn


@pytest.mark.sqlite_only
def test_store_is_owner_only_wal_and_versioned(home: Home, conn: sqlite3.Connection) -> None:
    assert stat.S_IMODE(home.db.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.datafiles.stat().st_mode) == 0o700
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlschema.SCHEMA_VERSION
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(subscriber_events)")}
    # the claim query's (open only: lane, next_attempt_at, id), the chart's and the failed count's
    assert {"subscriber_events_open", "subscriber_events_ended", "subscriber_events_failed"} <= indexes
    assert "subscriber_events_lane_due" not in indexes


@pytest.mark.sqlite_only
def test_newer_schema_is_refused(home: Home, conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA user_version = {sqlschema.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="upgrade ombridge"):
        store.connect(home)


@pytest.mark.sqlite_only
def test_garbage_file_is_a_clear_error(home: Home) -> None:
    home.datafiles.mkdir()
    home.db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable event core"):
        store.connect(home)


@pytest.mark.parametrize("pattern,topic,matches", [
    ("task/add", "task/add", True),
    ("task/add", "task/change", False),
    ("task/*", "task/add", True),
    ("task/*", "task/x/y", True),
    ("task/*", "comment/task/reply", False),
    ("comment/task/*", "comment/task/reply", True),
    ("comment/*", "comment/task/reply", True),
    ("task/x/*", "task/x/y", True),
    ("task/x/*", "task/add", False),
    ("*", "request/task/connect", True),
    ("*", "task/add", True),
])
def test_generic_matching(topics: sqlite3.Connection, pattern: str, topic: str, matches: bool) -> None:
    listen(topics, pattern)
    key = {"APPC": "A", "TASK": "T"} if topic.startswith("task/") else {}
    result = events.send(topics, topic, key)
    assert (result.event_id is not None) is matches
    assert result.deliveries == int(matches)


def test_nobody_listens_stores_nothing_unless_forced(topics: sqlite3.Connection) -> None:
    assert events.send(topics, "task/add", {"APPC": "A", "TASK": "T"}) == events.SendResult(None, 0)
    assert topics.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    forced = events.send(topics, "task/add", {"APPC": "A", "TASK": "T"}, force=True)
    assert forced.event_id is not None and forced.deliveries == 0
    row = topics.execute("SELECT forced, key FROM events").fetchone()
    assert row[0] == 1 and json.loads(row[1]) == {"APPC": "A", "TASK": "T"}


@pytest.mark.both_stores
def test_one_delivery_per_subscriber_even_when_several_topics_match(topics: sqlite3.Connection) -> None:
    sid = listen(topics, "task/*")
    catalog.attach_topic(topics, sid, "task/add")
    other = listen(topics, "*")
    result = events.send(topics, "task/add", {"APPC": "A", "TASK": "T"})
    assert result.deliveries == 2 and open_for(topics, result.event_id) == [sid, other]


@pytest.mark.both_stores
def test_filters_all_must_match_the_whole_value(topics: sqlite3.Connection) -> None:
    sid = listen(topics, "task/change")
    catalog.add_filter(topics, sid, "task/change", "&APPC", "KE.*")
    assert events.send(topics, "task/change", {"APPC": "KE1", "TASK": "T"}).deliveries == 1
    assert events.send(topics, "task/change", {"APPC": "XKE", "TASK": "T"}).deliveries == 0
    catalog.add_filter(topics, sid, "task/change", "TASK", "T[0-9]+")
    assert events.send(topics, "task/change", {"APPC": "KE1", "TASK": "T12"}).deliveries == 1
    assert events.send(topics, "task/change", {"APPC": "KE1", "TASK": "T12x"}).deliveries == 0
    catalog.remove_filter(topics, sid, "task/change", "&TASK")
    assert events.send(topics, "task/change", {"APPC": "KE1", "TASK": "T12x"}).deliveries == 1


def test_filter_on_a_number_and_a_filter_on_an_unknown_variable_refused(topics: sqlite3.Connection) -> None:
    catalog.add_topic(topics, "job/end", ["RC"])
    sid = listen(topics, "job/*")
    catalog.add_filter(topics, sid, "job/*", "RC", "[1-9][0-9]*")
    catalog.add_filter(topics, sid, "job/*", "TOPIC", "job/end")
    assert events.send(topics, "job/end", {"RC": 0}).deliveries == 0
    assert events.send(topics, "job/end", {"RC": 12}).deliveries == 1
    other = listen(topics, "task/add")
    with pytest.raises(UsageError, match=r"the filter tests &NOPE, .* variables are &APPC, &TASK, &TOPIC"):
        catalog.add_filter(topics, other, "task/add", "NOPE", ".*")
    assert events.send(topics, "task/add", {"APPC": "A", "TASK": "T"}).deliveries == 1


def test_disabled_subscribers_are_not_matched(topics: sqlite3.Connection) -> None:
    sid = listen(topics, "task/add")
    catalog.set_disabled(topics, sid, True)
    assert events.send(topics, "task/add", {"APPC": "A", "TASK": "T"}).deliveries == 0
    catalog.set_disabled(topics, sid, False)
    assert events.send(topics, "task/add", {"APPC": "A", "TASK": "T"}).deliveries == 1


@pytest.mark.parametrize("topic,key,message", [
    ("task/nope", {"APPC": "A", "TASK": "T"}, "topic task/nope is not defined"),
    ("Task/Add", {}, "bad topic"),
    ("task/add", '{"APPC": "A", "TASK": ', "bad key JSON"),
    ("task/add", '["APPC"]', "a key is a JSON object"),
    ("task/add", {"APPC": "A"}, r"needs field\(s\) TASK"),
    ("task/add", {"APPC": "A", "TASK": None}, "must be a string or a number"),
    ("task/add", {"APPC": "A", "TASK": True}, "must be a string or a number"),
    ("task/add", {"APPC": "A", "TASK": {"x": 1}}, "must be a string or a number"),
    ("task/add", '{"APPC": "A", "TASK": NaN}', "NaN is not a number"),
    ("task/add", {"APPC": "A", "TASK": "T", "bad-name": 1}, "bad key field"),
    ("task/add", {"APPC": "A", "TASK": "T", "EVENT": 1}, "reserved"),
    ("task/add", {"APPC": "A", "TASK": "x" * 70000}, "larger than"),
    ("task/add", {"APPC": "A", "TASK": "nul\x00"}, "NUL character"),
    ("task/add", {"APPC": "A", "TASK": b"\xff".decode("utf-8", "surrogateescape")}, "not valid UTF-8"),
])
def test_bad_sends_are_refused_and_store_nothing(topics: sqlite3.Connection, topic, key, message) -> None:
    listen(topics, "*")
    before = snapshot(topics)
    with pytest.raises(UsageError, match=message):
        events.send(topics, topic, key)
    assert snapshot(topics) == before


@pytest.mark.both_stores
def test_send_many_is_all_or_nothing(topics: sqlite3.Connection) -> None:
    listen(topics, "task/*")
    before = snapshot(topics)
    with pytest.raises(UsageError):
        events.send_many(topics, [("task/add", {"APPC": "A", "TASK": "1"}), ("task/add", {"APPC": "A"})])
    assert snapshot(topics) == before
    results = events.send_many(topics, [("task/add", {"APPC": "A", "TASK": str(i)}) for i in range(100)])
    assert [r.deliveries for r in results] == [1] * 100


@pytest.mark.parametrize("call,message", [
    (lambda c: catalog.add_topic(c, "task", []), "bad topic"),
    (lambda c: catalog.add_topic(c, "task/add", []), "already defined"),
    (lambda c: catalog.add_topic(c, "a/b", ["X", "X"]), "named twice"),
    (lambda c: catalog.add_topic(c, "a/b", ["1X"]), "bad key field"),
    (lambda c: catalog.add_topic(c, "a/b", ["TOPIC"]), "reserved"),
    (lambda c: catalog.attach_topic(c, 1, "task/**"), "bad topic pattern"),
    (lambda c: catalog.attach_topic(c, 1, "task*"), "bad topic pattern"),
    (lambda c: catalog.attach_topic(c, 1, "*/add"), "bad topic pattern"),
    (lambda c: catalog.attach_topic(c, 1, "task/nope"), "not defined"),
    (lambda c: catalog.attach_topic(c, 99, "task/add"), "no subscriber 99"),
    (lambda c: catalog.attach_topic(c, 1, "task/add"), "already attached"),
    (lambda c: catalog.add_filter(c, 1, "task/add", "&APPC", "KE(.*"), "bad regular expression"),
    (lambda c: catalog.add_filter(c, 1, "task/add", "&AP PC", ".*"), "bad variable"),
    (lambda c: catalog.add_filter(c, 1, "task/change", "&APPC", ".*"), "not attached"),
    (lambda c: catalog.remove_filter(c, 1, "task/add", "&APPC"), "no filter"),
    (lambda c: catalog.add_subscriber(c, ActionKind.COMMAND, "  "), "empty"),
    (lambda c: catalog.add_subscriber(c, ActionKind.PROGRAM, "relative/prog"), "absolute path"),
    (lambda c: catalog.add_subscriber(c, ActionKind.PROGRAM, "/nonexistent/prog"), "not an executable"),
    (lambda c: catalog.add_subscriber(c, ActionKind.WEB, "ftp://x/y"), "bad URL"),
    (lambda c: catalog.add_subscriber(c, ActionKind.COMMAND, "true", timeout=0), "timeout"),
    (lambda c: catalog.add_subscriber(c, ActionKind.COMMAND, "true", retries=-1), "retries"),
    (lambda c: catalog.remove_topic(c, "task/add"), "used by subscriber"),
    (lambda c: catalog.get_topic(c, "x/y"), "not defined"),
])
def test_bad_catalog_input_is_refused_and_changes_nothing(topics: sqlite3.Connection, call, message) -> None:
    listen(topics, "task/add")
    before = snapshot(topics)
    with pytest.raises(UsageError, match=message):
        call(topics)
    assert snapshot(topics) == before


def test_remove_topic_with_force_detaches_subscribers(topics: sqlite3.Connection) -> None:
    sid = listen(topics, "task/add")
    catalog.add_filter(topics, sid, "task/add", "APPC", "A")
    catalog.remove_topic(topics, "task/add", force=True)
    assert catalog.show_subscriber(topics, sid)["topics"] == []
    with pytest.raises(NotFound):
        catalog.get_topic(topics, "task/add")


def test_remove_subscriber_refuses_open_deliveries_then_purge(topics: sqlite3.Connection) -> None:
    sid = listen(topics, "task/add")
    events.send(topics, "task/add", {"APPC": "A", "TASK": "T"})
    with pytest.raises(UsageError, match="1 open deliveries"):
        catalog.remove_subscriber(topics, sid)
    assert catalog.purge_subscriber(topics, sid) == 1
    catalog.remove_subscriber(topics, sid)
    with pytest.raises(NotFound):
        catalog.get_subscriber(topics, sid)


def test_system_subscribers_cannot_be_removed_or_rewired(topics: sqlite3.Connection) -> None:
    sid = backsync.ensure_backsync(topics)
    for call in (lambda: catalog.remove_subscriber(topics, sid, force=True),
                 lambda: catalog.attach_topic(topics, sid, "task/add"),
                 lambda: catalog.add_filter(topics, sid, "task/add", "A", "b")):
        with pytest.raises(UsageError):
            call()


@pytest.mark.both_stores
def test_synchronized_subscriber_runs_before_send_returns(home: Home, topics: sqlite3.Connection) -> None:
    out = home.root / "sync.txt"
    listen(topics, "task/add", f"printf '%s %s' &TASK \"$OMBRIDGE_DEPTH\" > {out}", sync=True)
    result = sending.send(topics, "task/add", {"APPC": "A", "TASK": "T 1"})
    assert out.read_text() == "T 1 0"
    assert result.synchronized and result.synchronized[0][1] == "done"
    row = topics.execute("SELECT status, attempts FROM subscriber_events").fetchone()
    assert tuple(row) == ("done", 1)
    attempt = topics.execute("SELECT ok, exit_status, number FROM attempts").fetchone()
    assert tuple(attempt) == (1, 0, 1)


def test_failed_synchronized_call_stays_open_for_the_manager(topics: sqlite3.Connection) -> None:
    listen(topics, "task/add", "echo nope >&2; exit 3", sync=True)
    result = sending.send(topics, "task/add", {"APPC": "A", "TASK": "T"})
    assert result.synchronized[0][1] == "open"
    row = topics.execute("SELECT status, attempts, last_error, next_attempt_at FROM subscriber_events").fetchone()
    assert row["status"] == "open" and row["attempts"] == 1 and row["last_error"] == "exit status 3"
    assert row["next_attempt_at"] > store.now()  # backoff before the manager retries it
    assert topics.execute("SELECT output FROM attempts").fetchone()[0] == "nope\n"


@pytest.mark.both_stores
def test_async_subscribers_are_left_open_and_claimable(topics: sqlite3.Connection) -> None:
    listen(topics, "task/add", "true")
    events.send(topics, "task/add", {"APPC": "A", "TASK": "T"})
    claimed = deliveries.claim(topics, limit=10)
    assert len(claimed) == 1 and claimed[0].attempt == 1
    assert deliveries.claim(topics, limit=10) == []  # under lease
    later = deliveries.claim(topics, limit=10, at=store.now() + claimed[0].timeout + deliveries.LEASE_MARGIN + 1)
    assert len(later) == 1 and later[0].attempt == 2  # lease ran out: claimed again, attempt counted
    # the first claimer finishes late: fenced out, only its attempt is recorded
    from bridge.model import Attempt
    assert deliveries.finish(topics, [(claimed[0], Attempt(True, 0, 0, 0))]) == ["stale"]
    assert deliveries.finish(topics, [(later[0], Attempt(True, 0, 0, 0))]) == ["done"]
    assert topics.execute("SELECT count(*) FROM attempts").fetchone()[0] == 2


def test_a_claim_with_nothing_due_takes_no_write_lock(home: Home, topics: sqlite3.Connection,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A doorbell wakes every lane: the ones with nothing to do must not queue for the write lock
    # (under HTTP load the action lanes did, hundreds of times a second).
    from bridge.model import Lane

    listen(topics, "task/add", "true")
    writer = store.connect(home)
    monkeypatch.setattr(store, "BUSY_TIMEOUT", 0.2)  # a claim that waited for the lock would fail
    with store.transaction(writer):  # another process's long write
        assert deliveries.claim(topics, limit=10, lane=Lane.ACTIONS) == []
        assert deliveries.claim(topics, limit=10, lane=Lane.BACKSYNC) == []
    writer.close()
    events.send(topics, "task/add", {"APPC": "A", "TASK": "T"})
    assert len(deliveries.claim(topics, limit=10, lane=Lane.ACTIONS)) == 1


@pytest.mark.sqlite_only
def test_finish_and_claim_is_one_transaction_that_need_not_wait(home: Home, topics: sqlite3.Connection) -> None:
    # The backsync lane records a chunk and claims the next in one transaction, and does not
    # queue for the write lock while perl still has work (a sender may hold it for a while).
    import threading

    from bridge.model import Attempt, Lane

    listen(topics, "task/add", "true")
    for n in range(3):
        events.send(topics, "task/add", {"APPC": "A", "TASK": f"T{n}"})
    (first,) = deliveries.claim(topics, limit=1, lane=Lane.ACTIONS, owner="t")
    ok = Attempt(True, 1.0, 2.0)
    writer = store.connect(home)
    with store.transaction(writer):  # another process's write (SQLite's lock)
        with pytest.raises(store.Busy):
            deliveries.finish_and_claim(topics, [(first, ok)], limit=2, lane=Lane.ACTIONS, owner="t", wait=False)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread of this process (the in-process lock)
        with store.transaction(writer):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    with pytest.raises(store.Busy):
        deliveries.finish_and_claim(topics, [(first, ok)], limit=2, lane=Lane.ACTIONS, owner="t", wait=False)
    release.set()
    holder.join()
    writer.close()
    assert ledger.counts(topics)["done"] == 0  # nothing was done by the refused calls
    assert topics.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
    settled, claims = deliveries.finish_and_claim(topics, [(first, ok)], limit=5, lane=Lane.ACTIONS, owner="t")
    assert settled == ["done"] and len(claims) == 2 and {c.attempt for c in claims} == {1}
    assert [tuple(r) for r in topics.execute("SELECT number, started_at, ended_at, ok FROM attempts")] == [(1, 1.0, 2.0, 1)]


@pytest.mark.both_stores
def test_retries_run_out_then_failed_then_retry_reopens(topics: sqlite3.Connection) -> None:
    from bridge.model import Attempt
    listen(topics, "task/add", "false", retries=1)
    events.send(topics, "task/add", {"APPC": "A", "TASK": "T"})
    far = store.now() + 10_000
    bad = Attempt(False, 0, 0, 1, "", "exit status 1")
    assert deliveries.finish(topics, [(deliveries.claim(topics)[0], bad)]) == ["open"]
    assert deliveries.finish(topics, [(deliveries.claim(topics, at=far)[0], bad)]) == ["failed"]
    assert ledger.backlog(topics) == {"open": 0, "failed": 1}
    assert deliveries.retry_failed(topics) == 1
    assert ledger.backlog(topics) == {"open": 1, "failed": 0}


def test_events_sent_from_a_delivery_record_parent_and_depth(topics: sqlite3.Connection) -> None:
    listen(topics, "task/add")
    result = events.send(topics, "task/add", {"APPC": "A", "TASK": "T"},
                         environ={"OMBRIDGE_EVENT": "41", "OMBRIDGE_DEPTH": "2"})
    row = topics.execute("SELECT parent_id, depth FROM events WHERE id = ?", (result.event_id,)).fetchone()
    assert tuple(row) == (41, 3)
    before = snapshot(topics)
    with pytest.raises(UsageError, match="event chain too deep"):
        events.send(topics, "task/add", {"APPC": "A", "TASK": "T"},
                    environ={"OMBRIDGE_EVENT": "41", "OMBRIDGE_DEPTH": str(events.MAX_DEPTH)})
    assert snapshot(topics) == before


def test_a_synchronized_loop_is_stopped_at_the_depth_limit(home: Home, topics: sqlite3.Connection) -> None:
    import sys
    ombridge = Path(sys.executable).parent / "ombridge"
    listen(topics, "task/change",
           f"{ombridge} --home {home.root} send task/change '{{\"APPC\": \"&APPC\", \"TASK\": \"&TASK\"}}'",
           sync=True)
    sending.send(topics, "task/change", {"APPC": "A", "TASK": "T"})
    depths = [r[0] for r in topics.execute("SELECT depth FROM events ORDER BY id")]
    assert depths == list(range(events.MAX_DEPTH + 1))
    # the innermost delivery finished first: its send was refused, so it failed
    innermost = topics.execute("SELECT output, ok FROM attempts ORDER BY id LIMIT 1").fetchone()
    assert "event chain too deep" in innermost[0] and innermost[1] == 0


def test_key_field_retrieval() -> None:
    assert events.key_field('{"APPC": "DEMO", "N": 12}', "APPC") == "DEMO"
    assert events.key_field('{"APPC": "DEMO", "N": 12}', "&N") == "12"
    with pytest.raises(NotFound, match="no field TASK"):
        events.key_field('{"APPC": "DEMO"}', "TASK")


def test_matching_queries_only_candidate_patterns() -> None:
    assert events.candidate_patterns("a/b/c") == ["a/b/c", "a/b/*", "a/*", "*"]


@pytest.mark.sqlite_only
def test_a_version_1_store_is_migrated(home: Home, conn: sqlite3.Connection) -> None:
    backsync.close_events(conn, ["OLD-1"])  # a Close waiting in an old store
    for index in ("subscriber_events_open", "subscriber_events_ended", "subscriber_events_failed"):
        conn.execute(f"DROP INDEX {index}")  # back to what version 1 had
    conn.execute("CREATE INDEX subscriber_events_due ON subscriber_events (status, next_attempt_at, id)")
    conn.execute("ALTER TABLE subscriber_events DROP COLUMN lane")
    conn.execute("DROP TABLE claims")
    conn.execute("ALTER TABLE events DROP COLUMN context")
    conn.execute("DROP TABLE contexts")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    migrated = store.connect(home)
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == sqlschema.SCHEMA_VERSION == 16
    assert [r[0] for r in migrated.execute("SELECT lane FROM subscriber_events")] == ["backsync"]
    indexes = {r[1] for r in migrated.execute("PRAGMA index_list(subscriber_events)")}
    assert "subscriber_events_open" in indexes and "subscriber_events_ended" in indexes
    assert "subscriber_events_subscriber" in indexes  # (13: a subscriber's deliveries, a page at a time)
    assert "subscriber_events_lane_due" not in indexes and "subscriber_events_due" not in indexes
    assert ledger.backlog(migrated) == {"open": 1, "failed": 0}  # through the new indexes
    assert "claimed_by" not in [r[1] for r in migrated.execute("PRAGMA table_info(subscriber_events)")]  # (16)
    assert migrated.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
    assert "context" in [r[1] for r in migrated.execute("PRAGMA table_info(events)")]
    assert migrated.execute("SELECT count(*) FROM contexts").fetchone()[0] == 0

"""The event core in PostgreSQL (bridge/store/pgstore.py, bridge/store/dialect.py): choosing the store, what is
refused with one sentence, claims of two connections, and a real supervisor delivering Closes
through the real perl child with its store in the test server (tests/pg_support.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_ombridge as omb
from conftest import stop_quietly, wait_for
from pg_support import PgServer, free_port

from bridge import store
from bridge.errors import SchemaTooNew, StoreError
from bridge.eventcore import catalog, claims, deliveries, events
from bridge.home import Home
from bridge.model import ActionKind, Attempt, Lane
from bridge.store import pgschema, pgstore


@pytest.fixture
def pg_url(pg_server: PgServer, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a new database (its password in the server's .pgpass, PGPASSFILE set)."""
    monkeypatch.setenv("PGPASSFILE", pg_server.passfile)
    return pg_server.url(pg_db)


@pytest.fixture
def pg(home: Home, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The home's event core in PostgreSQL (OMBRIDGE_STORE), connected."""
    monkeypatch.setenv(store.STORE_ENV, pg_url)
    conn = store.connect(home)
    yield conn
    conn.close()


def _conf(home: Home, text: str) -> None:
    (home.root / "conf" / "ombridge.conf").write_text(text)


def test_the_store_is_chosen_by_option_then_environment_then_file(home: Home, pg_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.location(home) == ("", "")  # the default: the home's SQLite file
    _conf(home, f'[store]\nurl = "{pg_url}"\nnode = "connector-a"\n')
    assert store.location(home) == (pg_url, "connector-a")
    monkeypatch.setenv(store.STORE_ENV, "sqlite:")
    assert store.location(home) == ("sqlite:", "connector-a")
    monkeypatch.delenv(store.STORE_ENV)
    # Through the command line: the file's PostgreSQL store, unless --store says otherwise.
    omb(home, "topic", "add", "pg/only", "--key", "K")
    assert not home.db.exists()
    applied_by = pgstore.connect(pg_url).execute("SELECT applied_by FROM schema_migrations").fetchone()[0]
    assert applied_by == "connector-a"
    omb(home, "--store", "sqlite:", "topic", "add", "file/only", "--key", "K")
    assert home.db.exists()
    names = {t["name"] for t in json.loads(omb(home, "topic", "list", "--json").stdout)}
    assert "pg/only" in names and "file/only" not in names
    file_names = {t["name"] for t in json.loads(omb(home, "--store=sqlite:", "topic", "list", "--json").stdout)}
    assert "file/only" in file_names and "pg/only" not in file_names


@pytest.mark.parametrize("args", [["send", "t/x", "{}"], ["topic", "list"]])
def test_a_password_in_the_url_is_refused_in_one_sentence(home: Home, args: list[str]) -> None:
    # (`send` is the fast path of bridge/entry.py, `topic list` the full command line)
    r = omb(home, "--store", "postgresql://ombridge:s3cret@127.0.0.1/ombridge", *args, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "s3cret" not in r.stderr
    assert "holds a password" in r.stderr and "~/.pgpass" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_unreachable_database_is_one_sentence(home: Home, pg_server: PgServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.STORE_ENV, f"postgresql://ombridge@127.0.0.1:{free_port()}/ombridge")
    for args in (["send", "t/x", "{}"], ["close", "A"], ["deliveries", "list"]):
        r = omb(home, *args, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "is unreachable" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_newer_schema_is_refused(home: Home, pg: Any, pg_url: str) -> None:
    known = pgschema.latest()
    pg.execute("INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, 'future', '', 0)",
               (known + 1,))
    with pytest.raises(SchemaTooNew):
        store.connect(home)
    r = omb(home, "topic", "list", check=False)
    assert r.returncode == 1 and "upgrade ombridge" in r.stderr and "Traceback" not in r.stderr


def test_what_only_sqlite_does_is_refused_in_one_sentence(home: Home, pg: Any, tmp_path: Path) -> None:
    r = omb(home, "backup", str(tmp_path / "copy.db"), check=False)
    assert r.returncode == 1 and "pg_dump, or store copy" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "copy.db").exists()


def test_check_db_on_postgresql_finds_what_ours_can_break(home: Home, pg: Any) -> None:
    r = omb(home, "check", "--db")
    assert r.stdout.strip() == f"the database {pg.info.dbname} on 127.0.0.1:{pg.info.port}: ok"
    _due(pg, 3)
    # A sequence left behind its table (a copy that forgot it), an index gone, and claims of a
    # node nobody knows:
    pg.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), 1)")
    pg.execute("INSERT INTO claims (delivery_id, attempt, owner, lease_until) VALUES "
               "((SELECT min(id) FROM subscriber_events), 1, 'supervisor:ghost#12', ?)", (time.time() + 60,))
    pg.execute("DROP INDEX subscriber_events_ended")
    # rows the references no longer checked row by row (0016) would have refused
    pg.execute("INSERT INTO attempts (subscriber_event_id, number, started_at, ended_at, ok) VALUES (9999, 1, 0, 0, 0)")
    pg.execute("INSERT INTO subscriber_events (event_id, subscriber_id, lane, next_attempt_at, created_at, updated_at) "
               "SELECT 9999, subscriber_id, lane, 0, 0, 0 FROM subscriber_events LIMIT 1")
    r = omb(home, "check", "--db", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "the id sequence of events is behind its largest id 3" in r.stderr
    assert "index subscriber_events_ended is missing" in r.stderr
    assert "1 open claim(s) name node 'ghost', which is not in the nodes table" in r.stderr
    assert "1 deliveries name an event that is gone (they can never be delivered): DELETE FROM" in r.stderr
    assert "1 attempts name a delivery that is gone: DELETE FROM attempts" in r.stderr
    assert r.stderr.splitlines()[-1] == (f"ombridge: error: the database {pg.info.dbname} on 127.0.0.1:{pg.info.port}: "
                                         "4 problem(s) in the event core: each line says what repairs it; "
                                         "\"Checking the database\" in docs/multinode.md says more")


def _due(conn: Any, n: int) -> int:
    catalog.add_topic(conn, "t/x", ["K"])
    sid = catalog.add_subscriber(conn, ActionKind.COMMAND, "true")
    catalog.attach_topic(conn, sid, "t/x")
    events.send_many(conn, [("t/x", {"K": str(i)}) for i in range(n)])
    return sid


def test_two_connections_claim_disjoint_rows_without_waiting(home: Home, pg: Any) -> None:
    _due(pg, 10)
    other = store.connect(home)
    try:
        with store.transaction(pg):  # the first claimer's rows stay locked until it commits
            mine = deliveries._claim(pg, 6, store.now(), Lane.ACTIONS, "a")
            theirs = deliveries.claim(other, limit=10, lane=Lane.ACTIONS, owner="b")  # SKIP LOCKED: no wait
        assert len(mine) == 6 and len(theirs) == 4
        assert not {c.id for c in mine} & {c.id for c in theirs}
        owners = dict(pg.execute("SELECT owner, count(*) FROM claims GROUP BY owner").fetchall())
        assert owners == {"a": 6, "b": 4}
    finally:
        other.close()


def test_a_record_that_need_not_wait_is_busy_while_another_holds_its_rows(home: Home, pg: Any) -> None:
    _due(pg, 2)
    (first,) = deliveries.claim(pg, limit=1, lane=Lane.ACTIONS, owner="t")
    other = store.connect(home)
    try:
        with store.transaction(other):
            other.execute("SELECT id FROM subscriber_events WHERE id = ? FOR UPDATE", (first.id,))
            with pytest.raises(store.Busy):
                deliveries.finish_and_claim(pg, [(first, Attempt(True, 1.0, 2.0))], limit=1, lane=Lane.ACTIONS,
                                            owner="t", wait=False)
        settled, _ = deliveries.finish_and_claim(pg, [(first, Attempt(True, 1.0, 2.0))], limit=0,
                                                 lane=Lane.ACTIONS, owner="t", wait=False)
        assert [s.value for s in settled] == ["done"]
    finally:
        other.close()


def test_catalog_writes_of_two_connections_do_not_both_pass_the_check(home: Home, pg: Any) -> None:
    # "check, then insert" under PostgreSQL's advisory lock: one adds the topic, the other is told.
    other = store.connect(home)
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def add(conn: Any) -> None:
        go.wait(10)
        try:
            catalog.add_topic(conn, "race/x", ["K"])
        except Exception as exc:  # noqa: BLE001 - collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(c,)) for c in (pg, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    other.close()
    assert len(errors) == 1 and "already defined" in str(errors[0])


def test_a_real_supervisor_delivers_closes_from_postgresql(home: Home, pg_url: str) -> None:
    pids: list[int] = []
    try:
        r = omb(home, "--store", pg_url, "start")
        assert "ombridge started" in r.stdout
        pids.append(json.loads(omb(home, "--store", pg_url, "status", "--json").stdout)["supervisor"]["pid"])
        omb(home, "--store", pg_url, "close", "A", "B", "C")
        wait_for(lambda: [line.split(" ", 3)[3] for line in (home.output.read_text().splitlines()
                                                              if home.output.exists() else []) if " Close " in line]
                 == ["A", "B", "C"], timeout=60, what="the three closes in OMBSOutput.txt")
        wait_for(lambda: [d["status"] for d in json.loads(
            omb(home, "--store", pg_url, "deliveries", "list", "--json").stdout)] == ["done"] * 3,
            timeout=30, what="three deliveries done")
        assert not home.db.exists()  # nothing went to a SQLite file
    finally:
        stop_quietly(home, pids)
    log = (home.log_dir / "ombridge.log").read_text()
    assert "Traceback" not in log and " failed: " not in log and "3 closed" in log


def test_an_unknown_store_is_refused(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.STORE_ENV, "mysql://x/y")
    with pytest.raises(StoreError, match="unknown store"):
        store.connect(home)


def test_the_claim_reads_the_partial_index_of_open_deliveries(home: Home, pg: Any) -> None:
    # A backlog among many finished rows (without parameters, a `%` is sent as it is)
    _due(pg, 5000)
    pg.execute("UPDATE subscriber_events SET status = 'done' WHERE id % 10 <> 0")
    pg.execute("ANALYZE")
    sql = (deliveries._CLAIMED_SELECT + "WHERE se.lane = ? AND se.status = 'open' AND se.next_attempt_at <= ? "
           f"AND {claims.FREE} ORDER BY se.next_attempt_at, se.id LIMIT ?" + pg.dialect.skip_locked)
    plan = "\n".join(r[0] for r in pg.execute("EXPLAIN " + sql, ("actions", store.now(), store.now(), 20)))
    assert "subscriber_events_open" in plan and "LockRows" in plan, plan


@pytest.mark.parametrize("conf", ['[store]\nurl = 5\n', '[store\nurl = "x"\n', 'store = "postgresql://h/d"\n'])
def test_a_bad_store_setting_is_one_sentence(home: Home, conf: str) -> None:
    _conf(home, conf)
    with pytest.raises(StoreError, match="ombridge.conf"):
        store.location(home)
    r = omb(home, "topic", "list", check=False)
    assert r.returncode == 1 and "ombridge.conf" in r.stderr and "Traceback" not in r.stderr

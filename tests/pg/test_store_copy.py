"""`ombridge store copy --to URL` (issue 24): a home's event core moved from its SQLite file into a
real PostgreSQL database and back, ids kept, into an empty store only, all or nothing.

The home is filled by real commands and a real supervisor (done, failed and open deliveries with
their attempts, a user, a context table inside the event core); two things are written straight
into the file because they are hard to cause: an OMi mapping (the listener's) and a claim of a
node that died mid-delivery (a kill -9 at the right instant)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_ombridge as omb
from conftest import snapshot, status, stop_quietly, wait_for
from pg_support import PgServer, free_port

from bridge.errors import StoreError
from bridge.home import Home
from bridge.setup import storecopy

pytestmark = pytest.mark.xdist_group("postgresql")  # one server for every test of this folder
GONE = "supervisor:gone-node#4242"  # the owner of a claim whose node died and is not copied


@pytest.fixture
def target(pg_server: PgServer, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a new, empty database (the password in PGPASSFILE, as in production)."""
    monkeypatch.setenv("PGPASSFILE", pg_server.passfile)
    return pg_server.url(pg_db)


@pytest.fixture
def moved(home: Home) -> Iterator[Home]:
    """The home; its supervisor, on whatever store, stopped (or killed) afterwards."""
    yield home
    stop_quietly(home, [])


def populate(home: Home, tmp_path: Path) -> None:
    """A home with events done, failed and open (one of them claimed by a dead node), attempts,
    a user, a context table inside the event core, and an OMi mapping."""
    out = tmp_path / "ran.txt"
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    with sqlite3.connect(home.db) as db:
        db.execute("CREATE TABLE apps (APPL TEXT, NAME TEXT, SEATS INTEGER, LOAD REAL)")
        db.executemany("INSERT INTO apps VALUES (?, ?, ?, ?)",
                       [("T-1", "payroll", 12, 0.5), ("T-9", "ledger ü", 3, 1.25)])
    omb(home, "context", "add", "task/change", "apps", "--match", "TASK=APPL")
    good = omb(home, "subscriber", "add", "--command", f'echo "&TASK &NAME" >> {out}').stdout.strip()
    bad = omb(home, "subscriber", "add", "--command", "exit 3", "--retries", "0").stdout.strip()
    for sid in (good, bad):
        omb(home, "subscriber", "topic", "add", sid, "task/change")
    omb(home, "user", "add", "omi", stdin="a long enough password\n")
    omb(home, "start", "--poll", "60")
    try:
        omb(home, "send", "task/change", '{"TASK": "T-1"}')
        omb(home, "close", "A")
        wait_for(lambda: not [d for d in deliveries(home) if d["status"] == "open"], what="deliveries settled")
    finally:
        omb(home, "stop")
    omb(home, "close", "B", "C", "D")  # open: nobody runs
    with sqlite3.connect(home.db) as db:
        db.execute("INSERT INTO claims (delivery_id, attempt, owner, lease_until) VALUES "
                   "((SELECT max(id) FROM subscriber_events), 1, ?, ?)", (GONE, time.time() + 600))
        db.execute("INSERT INTO omi_events VALUES ('omi-1', 'A', 1, ?, NULL)", (time.time(),))
        db.execute("INSERT INTO console_sessions VALUES ('3fa9c0ffee', 'omi', ?, ?, NULL)",  # (its id: text)
                   (time.time(), time.time() + 3600))


def deliveries(home: Home, **env: str) -> list[dict]:
    return json.loads(omb(home, "deliveries", "list", "--limit", "1000", "--json", env=env).stdout)


def events(home: Home, **env: str) -> list[dict]:
    return json.loads(omb(home, "events", "list", "--limit", "1000", "--json", env=env).stdout)


def rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite event core with each value's SQLite type."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'nodes'")]
        return {t: [tuple((v, type(v).__name__) for v in r) for r in db.execute(f'SELECT * FROM "{t}" ORDER BY 1')]
                for t in tables}


def test_a_home_moves_to_postgresql_and_its_supervisor_delivers_there(moved: Home, tmp_path: Path,
                                                                      target: str) -> None:
    home = moved
    populate(home, tmp_path)
    before_events, before_deliveries = events(home), deliveries(home)
    assert {d["status"] for d in before_deliveries} == {"done", "failed", "open"}

    r = omb(home, "store", "copy", "--to", target)
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [*storecopy.TABLES, "apps"]
    assert lines[-1].startswith(f"copied the event core of {home.db} to the database ")
    assert "5 events, " in lines[-1] and "1 open claim released" in lines[-1] and "[store] url" in lines[-1]
    assert r.stderr == ""

    on_pg = {"OMBRIDGE_STORE": target}
    assert events(home, **on_pg) == before_events
    after = deliveries(home, **on_pg)
    assert [(d["id"], d["event_id"], d["status"], d["attempts"]) for d in after] == \
           [(d["id"], d["event_id"], d["status"], d["attempts"]) for d in before_deliveries]
    assert omb(home, "check", "--db", env=on_pg).stdout.strip().endswith(": ok")

    (home.root / "conf" / "ombridge.conf").write_text(f'[store]\nurl = "{target}"\n')
    omb(home, "start", "--poll", "60")
    script_out = home.root / "tmp" / "OMBSOutput.txt"
    wait_for(lambda: all(f"Close {i}\n" in script_out.read_text() for i in "BCD"), what="the open Closes")
    omb(home, "send", "task/change", '{"TASK": "T-9"}')  # the context table answers from PostgreSQL
    wait_for(lambda: "T-9 ledger ü\n" in (tmp_path / "ran.txt").read_text(), what="T-9 with its context")
    assert status(home)["backlog"]["open"] == 0
    assert script_out.read_text().count("Close A\n") == 1  # done on SQLite: not delivered again
    omb(home, "stop")
    assert omb(home, "check", "--db").stdout.strip().endswith(": ok")


def test_postgresql_back_to_sqlite_is_row_for_row_the_original(home: Home, tmp_path: Path, target: str) -> None:
    populate(home, tmp_path)
    omb(home, "store", "copy", "--to", target)
    back = tmp_path / "back.db"
    tmp_path.chmod(0o755)
    r = omb(home, "store", "copy", "--to", f"sqlite:{back}", env={"OMBRIDGE_STORE": target})
    # The file is owner-only; the folder it went into is left as it was (it could be /tmp).
    assert (back.stat().st_mode & 0o777, tmp_path.stat().st_mode & 0o777) == (0o600, 0o755)
    assert not (tmp_path / ".migrate.lock").exists()
    assert r.stdout.splitlines()[-1].startswith("copied the event core of the database ")

    original, copied = rows(home.db), rows(back)
    assert set(copied) == set(original)
    for table in original:
        if table not in ("claims", "apps"):
            assert copied[table] == original[table], table
    # A context table is text in PostgreSQL (docs/multinode.md): its values come back as text,
    # and a key's number still finds its row (TEXT affinity on the way back).
    assert [tuple(str(v) for v, _ in r) for r in copied["apps"]] == \
           [tuple(str(v) for v, _ in r) for r in original["apps"]]
    with sqlite3.connect(back) as db:
        assert db.execute("SELECT NAME FROM apps WHERE SEATS = ?", (12,)).fetchall() == [("payroll",)]
    # The one claim of the dead node was released on the way: its lease ended, owner-less, its
    # attempt still counted; the delivery itself did not move.
    assert [r for r in original["claims"] if (GONE, "str") in r]
    with sqlite3.connect(back) as db:
        row = db.execute("SELECT attempt, owner, lease_until FROM claims "
                         "WHERE delivery_id = (SELECT max(id) FROM subscriber_events)").fetchone()
    assert row == (1, None, 0)


def refused(home: Home, *args: str, **env: str) -> str:
    r = omb(home, *args, check=False, env=env)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_refusals_leave_the_target_as_it_was(moved: Home, tmp_path: Path, target: str, pg_server: PgServer,
                                             pg_db: str) -> None:
    home = moved
    omb(home, "close", "X")
    with pg_server.connect(pg_db, autocommit=True) as pg:
        omb(home, "--store", target, "close", "Y")  # a target that holds an event
        held = snapshot(pg)
        assert "holds 1 event, 1 delivery: copy only into an empty store" in refused(
            home, "store", "copy", "--to", target)
        assert snapshot(pg) == held
        assert "is the home's store already" in refused(home, "store", "copy", "--to", "sqlite:")
        assert "the store URL holds a password" in refused(
            home, "store", "copy", "--to", target.replace("ombridge@", "ombridge:secret@"))
        port = free_port()
        assert f"on 127.0.0.1:{port} is unreachable" in refused(
            home, "store", "copy", "--to", f"postgresql://ombridge@127.0.0.1:{port}/nowhere")
        # A live node on the source (PostgreSQL): another node could be writing.
        pg.execute("INSERT INTO nodes VALUES ('node-b', 'db-b', '/srv/b', 1, 'supervisor:node-b#1', '1', NULL, NULL, "
                   "%s, %s, NULL)", (time.time(), time.time()))
        assert "has live nodes (node-b): stop them first" in refused(
            home, "store", "copy", "--to", f"sqlite:{tmp_path / 'out.db'}", OMBRIDGE_STORE=target)
        assert not (tmp_path / "out.db").exists()

    empty = pg_server.create_database()
    try:
        omb(home, "start", "--poll", "60")
        pid = status(home)["supervisor"]["pid"]
        assert f"ombridge is running in {home.root} (pid {pid}): `ombridge stop` first" in refused(
            home, "store", "copy", "--to", pg_server.url(empty))
        omb(home, "stop")
        with pg_server.connect(empty, autocommit=True) as pg:
            assert pg.execute("SELECT to_regclass('events')").fetchone()[0] is None  # never even migrated
    finally:
        pg_server.drop_database(empty)


def test_a_failure_in_the_middle_leaves_the_target_empty(home: Home, tmp_path: Path, target: str,
                                                         pg_server: PgServer, pg_db: str) -> None:
    omb(home, "close", "A", "B")
    omb(home, "user", "add", "omi", stdin="a long enough password\n")
    omb(home, "--store", target, "check", "--db")  # migrated and seeded, as any command leaves it
    with pg_server.connect(pg_db, autocommit=True) as pg:
        # A target table that rejects what the source holds: the attempts and users before it went in.
        pg.execute("ALTER TABLE console_sessions ADD CONSTRAINT reject CHECK (false) NOT VALID")
        with sqlite3.connect(home.db) as db:
            db.execute("INSERT INTO console_sessions VALUES ('s1', 'omi', 1.0, 2.0, NULL)")
        before = snapshot(pg)
        message = refused(home, "store", "copy", "--to", target)
        assert "the copy into the database" in message and "nothing was copied" in message
        assert snapshot(pg) == before
        assert pg.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_a_failure_into_a_new_sqlite_file_leaves_no_file(home: Home, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    omb(home, "close", "A")
    real = storecopy._copy_table

    def fail_at_events(src, tgt, table):  # noqa: ANN001 - a fault hard to cause: a disk full mid-copy
        if table == "events":
            raise sqlite3.OperationalError("database or disk is full")
        return real(src, tgt, table)

    monkeypatch.setattr(storecopy, "_copy_table", fail_at_events)
    with pytest.raises(StoreError, match=r"the copy into .*out.db failed \(database or disk is full\); nothing"):
        storecopy.copy(home, f"sqlite:{tmp_path / 'out.db'}")
    assert not (tmp_path / "out.db").exists()

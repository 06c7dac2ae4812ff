"""Issue 28: never a silent loss or a silent duplicate. Each test drives the fix as its user
would (the CLI, OMi's HTTP requests, a database that goes away) and fails on the code before it."""

from __future__ import annotations

import json

import pytest
from conftest import run_ombridge as omb
from conftest import wait_for
from web_support import XML, change_body, change_path, install, recorded

from bridge import store
from bridge.home import Home


def backsync_id(home: Home) -> str:
    subs = json.loads(omb(home, "subscriber", "list", "--json").stdout)
    return str(next(s["id"] for s in subs if s["action"] == "backsync"))


def stored_closes(home: Home) -> list[str]:
    conn = store.connect(home)
    try:
        return [json.loads(k)["ID"] for (k,) in conn.execute("SELECT key FROM events WHERE topic = 'event/update' "
                                                             "ORDER BY id")]
    finally:
        conn.close()


# -- 1. a disabled backsync refuses closes, it does not store them for nobody --------------------


def test_a_disabled_backsync_refuses_closes_from_the_cli_and_says_so_in_status(home: Home) -> None:
    sid = backsync_id(home)
    omb(home, "subscriber", "disable", sid)
    for args in (("close", "EVT-1"), ("send", "event/update", '{"ID": "EVT-2", "STATE": "closed"}')):
        r = omb(home, *args, check=False)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert f"the backsync subscriber ({sid}) is disabled" in r.stderr and "nothing was stored" in r.stderr
        assert f"ombridge subscriber enable {sid}" in r.stderr and "Traceback" not in r.stderr
    r = omb(home, "close", "-", stdin="EVT-3\nEVT-4\n", check=False)
    assert r.returncode == 1 and "Nothing was stored" in r.stderr
    assert stored_closes(home) == []
    r = omb(home, "status", "--json", check=False)
    assert r.returncode == 3  # (not running)
    assert any(f"backsync subscriber ({sid}) is disabled" in d for d in json.loads(r.stdout)["degraded"])
    omb(home, "subscriber", "enable", sid)
    omb(home, "close", "EVT-5")
    assert stored_closes(home) == ["EVT-5"]


def test_omi_is_answered_503_while_the_backsync_is_disabled_and_the_close_runs_once_enabled(
        home: Home, listening) -> None:
    install(home, "recorder")
    sid = backsync_id(home)
    srv = listening()
    omb(home, "subscriber", "disable", sid)
    r = omb(home, "status", check=False)
    assert r.returncode == 1 and f"backsync subscriber ({sid}) is disabled: closes are refused" in r.stdout
    with srv.client() as http:
        r = http.post(change_path("OMI-1"), content=change_body("closed"), headers=XML)
        assert r.status_code == 503 and r.headers["retry-after"] == "30", r.text
        assert "disabled" in r.text
        # a change that is no close is stored as before: nothing would run it anyway
        assert http.post(change_path("OMI-2"), content=change_body(None, title="t"), headers=XML).status_code == 200
        r = http.post("/api/v1/events", json={"topic": "event/update", "key": {"ID": "API-1", "STATE": "closed"}})
        assert r.status_code == 503 and r.json()["error"].startswith("the backsync subscriber")
        assert stored_closes(home) == ["OMI-2"]
        omb(home, "subscriber", "enable", sid)
        assert omb(home, "status", check=False).returncode == 0
        # OMi sends it again, as it does after a 503
        assert http.post(change_path("OMI-1"), content=change_body("closed"), headers=XML).status_code == 200
    wait_for(lambda: recorded(home) == ["OMI-1"], what="the close OMi sent again ran")


def test_a_batch_of_the_group_commit_keeps_the_others_when_one_close_is_refused(home: Home, listening) -> None:
    """Concurrent requests share a transaction: the refused close must not take the others with it."""
    import concurrent.futures

    sid = backsync_id(home)
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    out = home.tmp / "ran.txt"
    home.tmp.mkdir(exist_ok=True)
    cid = omb(home, "subscriber", "add", "--command", f'echo "&TASK" >> {out}').stdout.strip()
    omb(home, "subscriber", "topic", "add", cid, "task/change")
    srv = listening()
    omb(home, "subscriber", "disable", sid)
    with srv.client() as http, concurrent.futures.ThreadPoolExecutor(8) as pool:
        def close(i: int) -> int:
            return http.post(change_path(f"C-{i}"), content=change_body("closed"), headers=XML).status_code

        def task(i: int) -> int:
            return http.post("/api/v1/events", json={"topic": "task/change", "key": {"TASK": f"T-{i}"}}).status_code

        futures = [pool.submit(close if i % 2 else task, i) for i in range(40)]
        codes = [f.result() for f in futures]
    assert [c for i, c in enumerate(codes) if i % 2] == [503] * 20
    assert [c for i, c in enumerate(codes) if not i % 2] == [201] * 20
    wait_for(lambda: out.exists() and len(out.read_text().split()) == 20, what="the other events ran")
    assert stored_closes(home) == []


# -- 2. `close -` cut off by the event core says where to go on ---------------------------------


@pytest.mark.xdist_group("postgresql")
@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_close_stdin_cut_off_by_the_database_says_how_to_resume_without_closing_twice(
        home: Home, store_kind: str, pg_server, pg_db: str) -> None:
    import subprocess

    from conftest import OMBRIDGE

    ids = [f"C-{n}" for n in range(7000)]
    text = "".join(f"{i}\n" for i in ids[:3000]) + "\n" + "".join(f"{i}\n" for i in ids[3000:])  # a blank line 3,001
    lines = text.splitlines(keepends=True)
    sender = subprocess.Popen([OMBRIDGE, "--home", str(home.root), "close", "-"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sender.stdin.write("".join(lines[:4001]))  # two commits of 2,000: the IDs of lines 1 to 4,001
        sender.stdin.flush()
        wait_for(lambda: len(stored_closes(home)) == 4000, what="the first two commits")
        with pg_server.admin() as admin:  # the database goes away under the sender (a restart, a failover)
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND pid <> pg_backend_pid()", (pg_db,))
        sender.stdin.write("".join(lines[4001:]))
        out, err = sender.communicate(timeout=120)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.communicate()
    assert sender.returncode == 1, (out, err)
    assert err.startswith("ombridge: error: the event core's database cannot be reached (") and err.count("\n") == 1, err
    assert "4,000 closed events were stored before that, from input lines 1 to 4,001" in err, err
    assert "Nothing from input line 4,002 on was stored" in err and "try again" not in err
    assert "ombridge close --skip 4001 - < FILE" in err
    r = omb(home, "close", "--skip", "4001", "-", stdin=text)
    assert r.stdout.strip() == "3000 closed events sent"
    assert stored_closes(home) == ids  # each once, in order
    r = omb(home, "close", "--skip", "3", "EVT-1", check=False)
    assert r.returncode == 2 and "--skip N is for `close -`" in r.stderr


# -- 5. an id that was ever shown never comes back --------------------------------------------


def _delivery_and_attempt(home: Home, sid: str) -> tuple[int, int]:
    """The newest delivery of subscriber ``sid`` and the id of its attempt row (the log names it)."""
    rows = json.loads(omb(home, "deliveries", "list", "--subscriber", sid, "--json").stdout)
    conn = store.connect(home)
    try:
        return rows[0]["id"], conn.execute("SELECT max(id) FROM attempts WHERE subscriber_event_id = ?",
                                           (rows[0]["id"],)).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.both_stores
def test_ids_are_never_reused_after_a_removal_or_a_prune(home: Home, store_kind: str, tmp_path) -> None:
    omb(home, "topic", "add", "task/change", "--key", "TASK")
    seen: dict[str, set[int]] = {"subscriber": set(), "delivery": set(), "attempt": set(), "event": set()}
    for round_ in range(2):
        sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
        omb(home, "subscriber", "topic", "add", sid, "task/change", "--sync")  # delivered before send returns
        event = int(omb(home, "send", "task/change", f'{{"TASK": "T{round_}"}}').stdout)
        delivery, attempt = _delivery_and_attempt(home, sid)
        for what, value in (("subscriber", int(sid)), ("delivery", delivery), ("attempt", attempt), ("event", event)):
            assert value not in seen[what], f"{what} {value} came back after its removal"
            seen[what].add(value)
        omb(home, "subscriber", "remove", sid, "--force")
        omb(home, "prune", "--all")
    events = json.loads(omb(home, "events", "list", "--json").stdout)
    assert events == []  # (pruned: their ids were free for reuse before)


def test_the_migration_to_autoincrement_keeps_every_row_and_id(tmp_path) -> None:
    """An event core of schema 11 (ids by max + 1) is rebuilt with AUTOINCREMENT, rows and keys kept."""
    import sqlite3

    import sqlite_utils

    from bridge.store import sqlschema

    home = Home(tmp_path / "old")
    home.db.parent.mkdir(parents=True)
    conn = sqlite3.connect(home.db, isolation_level=None)
    db = sqlite_utils.Database(conn)
    for step in sqlschema.MIGRATIONS[:11]:
        step(db)
    conn.execute("PRAGMA user_version = 11")
    conn.execute("INSERT INTO subscribers (id, action, target, timeout, retries, created_at) "
                 "VALUES (7, 'command', 'true', 5, 1, 0)")
    conn.execute("INSERT INTO topics (name, key_fields, created_at) VALUES ('a/b', '[]', 0)")
    conn.execute("INSERT INTO subscriber_topics (id, subscriber_id, pattern) VALUES (3, 7, 'a/b')")
    conn.execute("INSERT INTO events (id, topic, key, created_at) VALUES (41, 'a/b', '{}', 0)")
    conn.execute("INSERT INTO subscriber_events (id, event_id, subscriber_id, subscriber_topic_id, status, "
                 "next_attempt_at, created_at, updated_at, lane) VALUES (13, 41, 7, 3, 'done', 0, 0, 0, 'actions')")
    conn.execute("INSERT INTO attempts (id, subscriber_event_id, number, started_at, ended_at, ok) "
                 "VALUES (92, 13, 1, 0, 0, 1)")
    # every column but the claim's, which schema 16 moved to the claims table (none was claimed)
    columns = {t: ", ".join(r[1] for r in conn.execute(f"PRAGMA table_info({t})") if r[1] != "claimed_by")
               for t in sqlschema.ID_TABLES}
    before = {t: conn.execute(f"SELECT {columns[t]} FROM {t} ORDER BY 1").fetchall() for t in sqlschema.ID_TABLES}
    conn.close()
    new = store.connect(home)  # migrates
    try:
        assert new.execute("PRAGMA user_version").fetchone()[0] == sqlschema.SCHEMA_VERSION
        assert {t: [tuple(r) for r in new.execute(f"SELECT {columns[t]} FROM {t} ORDER BY 1")]
                for t in sqlschema.ID_TABLES} == {t: [tuple(r) for r in rows] for t, rows in before.items()}
        assert new.execute("PRAGMA foreign_key_check").fetchall() == []
        assert new.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert new.execute("SELECT sql FROM sqlite_master WHERE name = 'subscriber_events_open'").fetchone()
        new.execute("DELETE FROM attempts")
        new.execute("INSERT INTO attempts (subscriber_event_id, number, started_at, ended_at, ok) "
                    "VALUES (13, 2, 0, 0, 1)")
        assert new.execute("SELECT id FROM attempts").fetchone()[0] == 93  # not 1: 92 was shown once
    finally:
        new.close()


# -- 7. the database's clock sets when a Close is due, not the sending node's -----------------


def faketime() -> str:
    """Debian's faketime (make test installs it): a real process whose clock is off."""
    import os
    import shutil

    found = shutil.which("faketime")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("faketime is missing: make test installs it (apt-get install faketime)")
        pytest.skip("faketime is missing (make test installs it: apt-get install faketime)")
    return found


@pytest.mark.xdist_group("postgresql")
@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
@pytest.mark.parametrize("off", ["+40s", "-40s"])
def test_a_node_whose_clock_is_off_neither_delays_nor_hurries_the_closes(home: Home, store_kind: str,
                                                                         off: str) -> None:
    """Closes stored by a sender whose clock is 40 s ahead ran 40 s late; a supervisor whose clock
    is 40 s behind waited as long for every Close. Both now read the database's clock."""
    import time

    from conftest import stop_quietly

    install(home, "recorder")
    ahead = off.startswith("+")
    # the sender's clock is ahead; or the supervisor's is behind
    omb(home, "start", "--poll", "120", **({} if ahead else {"wrap": [faketime(), "-f", off]}))
    try:
        begun = time.monotonic()
        omb(home, "close", "CLK-1", **({"wrap": [faketime(), "-f", off]} if ahead else {}))
        wait_for(lambda: recorded(home) == ["CLK-1"], timeout=30, what="the Close ran")
        assert time.monotonic() - begun < 15  # not 40 s late
    finally:
        stop_quietly(home, [])


# -- the smaller defects ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("subscriber", "list"), ("key", "get", '{"A": "x"}', "A")])
def test_a_reader_that_goes_away_ends_the_command_quietly(home: Home, args: tuple[str, ...]) -> None:
    """`ombridge status | head -1` printed a BrokenPipeError traceback and exited 120."""
    import os
    import subprocess

    from conftest import OMBRIDGE

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        r = subprocess.run([OMBRIDGE, "--home", str(home.root), *args], stdout=write, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (141, "")


def test_status_says_when_the_settings_file_is_broken(home: Home) -> None:
    """It said only that the backlog was unknown, or nothing at all."""
    conf = home.root / "conf" / "ombridge.conf"
    omb(home, "start")
    try:
        conf.write_text("[ombacksync\nperl = 'perl'\n")
        r = omb(home, "status", check=False)
        assert r.returncode == 1, r.stdout
        assert f"degraded      {conf} is not valid TOML: " in r.stdout and "(the next start or restart fails)" in r.stdout
        conf.write_text("[ombacksync]\nperl = 'perl'\n[nonsense]\n")
        assert f"{conf}: unknown setting(s) nonsense (known tables: [ombacksync]" in omb(home, "status", check=False).stdout
        conf.write_text("[ombacksync]\nperl = 'perl'\n")
        assert omb(home, "status", check=False).returncode == 0
    finally:
        omb(home, "stop", check=False)
    conf.write_text("[store\n")
    r = omb(home, "status", check=False)
    assert r.returncode == 3 and f"degraded      {conf} is not valid TOML" in r.stdout


def test_subscriber_set_changes_what_it_runs_and_its_secret_headers(home: Home) -> None:
    sid = omb(home, "subscriber", "add", "--command", "true").stdout.strip()
    omb(home, "subscriber", "set", sid, "--command", "echo '&ID' >> /dev/null", "--retries", "3")
    shown = json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)
    assert (shown["action"], shown["target"], shown["retries"]) == ("command", "echo '&ID' >> /dev/null", 3)
    r = omb(home, "subscriber", "set", sid, "--command", "sh -c 'echo &ID'", check=False)
    assert r.returncode == 2 and "sh -c" in r.stderr  # checked as `subscriber add` checks it
    omb(home, "subscriber", "set", sid, "--url", "https://itsm.example.com/close", "--secret-header", "Authorization",
        stdin="Bearer s3cret-token\n")
    shown = json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)
    assert (shown["action"], shown["target"], shown["secret_headers"]) == (
        "web", "https://itsm.example.com/close", ["Authorization"])
    assert "s3cret-token" not in omb(home, "subscriber", "show", sid).stdout
    r = omb(home, "subscriber", "set", sid, "--command", "true", check=False)
    assert r.returncode == 2 and "secret headers are for web subscribers" in r.stderr  # all or nothing
    omb(home, "subscriber", "set", sid, "--remove-secret-header", "Authorization", "--command", "true")
    assert json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)["secret_headers"] == []
    r = omb(home, "subscriber", "set", sid, "--url", "https://a.example", "--command", "true", check=False)
    assert r.returncode == 2 and "at most one of --command, --program or --url" in r.stderr
    r = omb(home, "subscriber", "set", backsync_id(home), "--command", "true", check=False)
    assert r.returncode == 2 and "its action is fixed" in r.stderr
    assert "  system yes, disabled no, timeout" in omb(home, "subscriber", "show", backsync_id(home)).stdout


def test_wording_names_no_python_type_and_no_doubled_name(home: Home) -> None:
    omb(home, "topic", "add", "a/b", "--key", "K")
    r = omb(home, "send", "a/b", '{"K": {"x": 1}}', "--force", check=False)
    assert r.stderr.strip() == "ombridge: error: key field K must be a string or a number, not an object"
    omb(home, "start")
    try:
        r = omb(home, "start", check=False)
        assert r.returncode == 0 and r.stderr.startswith("ombridge: a supervisor already runs in this home (pid ")
        assert ", restarts after faults 0" in omb(home, "status").stdout
    finally:
        omb(home, "stop")


def test_integration_add_of_a_broken_file_names_the_integration_its_file_and_its_line(home: Home, tmp_path) -> None:
    broken = tmp_path / "vendor.pl"
    broken.write_text("sub OMBackSync {\n    my ($op, $id) = @_;\n    my $x = ;\n    return 1;\n}\n1;\n")
    before = home.script.read_bytes()
    r = omb(home, "integration", "add", "vendor", str(broken), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"ombridge: error: integration vendor ({broken}) does not compile:\n")
    assert f"syntax error at {broken} line 3, near" in r.stderr
    assert r.stderr.rstrip().endswith(f"nothing was merged: {home.script} is unchanged")
    assert home.script.read_bytes() == before

"""The event core through the installed `ombridge` command, as an operator uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import OMBRIDGE, snapshot
from conftest import run_ombridge as omb

from bridge import store
from bridge.home import Home

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)



@pytest.mark.both_stores
def test_the_seeds_how_to(home: Home) -> None:
    messages = home.root / "qsysopr.txt"
    omb(home, "topic", "add", "task/change", "--key", "APPC", "--key", "TASK", "--description", "a task was changed")
    sid = omb(home, "subscriber", "add", "--description", "Send a message when a task changes",
              "--command", f"echo 'Task &TASK was changed in application &APPC.' >> {messages}").stdout.strip()
    assert sid.isdigit()
    omb(home, "subscriber", "topic", "add", sid, "task/change", "--sync")
    omb(home, "subscriber", "filter", "add", sid, "task/change", "&APPC", "KE.*")
    event = omb(home, "send", "task/change", '{"APPC": "KE1", "TASK": "T0123"}')
    assert event.stdout.strip().isdigit()
    skipped = omb(home, "send", "task/change", '{"APPC": "XKE", "TASK": "T0124"}', check=False)
    assert skipped.returncode == 3 and skipped.stdout == "" and "nobody listens" in skipped.stderr
    hostile = "$(touch pwned); '; touch pwned2; ' `touch pwned3`"
    omb(home, "send", "task/change", json.dumps({"APPC": "KE2", "TASK": hostile}))
    assert messages.read_text().splitlines() == [
        "Task T0123 was changed in application KE1.",
        f"Task {hostile} was changed in application KE2.",
    ]
    assert not any((home.root / n).exists() for n in ("pwned", "pwned2", "pwned3"))
    listing = json.loads(omb(home, "deliveries", "list", "--json").stdout)
    assert [(d["status"], d["key"]["APPC"]) for d in listing] == [("done", "KE2"), ("done", "KE1")]
    shown = omb(home, "subscriber", "show", sid).stdout
    assert "filter &APPC = KE.*" in shown and "task/change (synchronized)" in shown


@pytest.mark.both_stores
def test_listings_and_json(home: Home) -> None:
    omb(home, "topic", "add", "job/end", "--key", "RC")
    sid = omb(home, "subscriber", "add", "--command", "exit 1", "--retries", "0").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "job/*", "--sync")
    omb(home, "send", "job/end", '{"RC": 3}')
    omb(home, "send", "job/end", '{"RC": 4}', "--force")
    topics = {t["name"]: t for t in json.loads(omb(home, "topic", "list", "--json").stdout)}
    assert topics["job/end"]["key_fields"] == ["RC"] and "event/update" in topics  # system topics are there too
    subs = {str(s["id"]): s for s in json.loads(omb(home, "subscriber", "list", "--json").stdout)}
    assert subs[sid]["failed"] == 2 and subs[sid]["topics"] == "job/* (sync)"
    evs = json.loads(omb(home, "events", "list", "--json", "--topic", "job/end").stdout)
    assert [e["key"] for e in evs] == [{"RC": 4}, {"RC": 3}]
    failed = json.loads(omb(home, "deliveries", "list", "--status", "failed", "--json").stdout)
    assert len(failed) == 2 and failed[0]["last_error"] == "exit status 1"
    assert "2 failed deliveries reopened" in omb(home, "retry", "--subscriber", sid).stdout
    table = omb(home, "deliveries", "list").stdout
    assert "job/end" in table and "exit status 1" in table
    assert "task" not in omb(home, "topic", "list").stdout


def test_key_get(home: Home) -> None:
    assert omb(home, "key", "get", '{"APPC": "DEMO", "N": 1.5}', "N").stdout == "1.5\n"
    r = omb(home, "key", "get", '{"APPC": "DEMO"}', "TASK", check=False)
    assert r.returncode == 2 and r.stderr == "ombridge: error: the key has no field TASK\n"


def test_event_program_uses_key_get(home: Home, tmp_path: Path) -> None:
    program = tmp_path / "runevtoms.sh"
    out = tmp_path / "out.txt"
    program.write_text(f'#!/bin/sh\necho "$1 $({OMBRIDGE} key get "$2" TASK)" > {out}\n')
    program.chmod(0o755)
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--program", str(program)).stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/*", "--sync")
    omb(home, "send", "task/add", '{"TASK": "T 9"}')
    assert out.read_text() == "task/add T 9\n"


@pytest.mark.parametrize("args,message", [
    (["send", "task/nope", "{}"], "topic task/nope is not defined"),
    (["send", "task/add", "{bad"], "bad key JSON"),
    (["send", "task/add", '{"APPC": "A"}'], "needs field(s) TASK"),
    (["send", "task/add", '{"APPC": "A", "TASK": []}'], "must be a string or a number"),
    (["topic", "add", "Task/Add"], "bad topic"),
    (["topic", "add", "task/add", "--key", "APPC"], "already defined"),
    (["topic", "remove", "task/add"], "used by subscriber(s) 2"),
    (["topic", "show", "x/y"], "topic x/y is not defined"),
    (["subscriber", "add", "--command", "true", "--url", "http://x/"], "exactly one of"),
    (["subscriber", "add", "--url", "file:///etc/passwd"], "bad URL"),
    (["subscriber", "show", "42"], "no subscriber 42"),
    (["subscriber", "topic", "add", "2", "task/**"], "bad topic pattern"),
    (["subscriber", "filter", "add", "2", "task/add", "&APPC", "KE(["], "bad regular expression"),
    (["subscriber", "filter", "remove", "2", "task/add", "&APPC"], "no filter on &APPC"),
    (["subscriber", "remove", "2"], "1 open deliveries"),
])
def test_bad_input_gets_one_clear_error_and_changes_nothing(home: Home, args: list[str], message: str) -> None:
    omb(home, "topic", "add", "task/add", "--key", "APPC", "--key", "TASK")
    assert omb(home, "subscriber", "add", "--command", "true").stdout.strip() == "2"  # 1 is the backsync
    omb(home, "subscriber", "topic", "add", "2", "task/add")
    omb(home, "send", "task/add", '{"APPC": "A", "TASK": "T"}')
    conn = store.connect(home)
    before = snapshot(conn)
    r = omb(home, *args, check=False)
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("ombridge: error: ") and message in r.stderr
    assert "Traceback" not in r.stderr
    assert snapshot(conn) == before


@pytest.mark.sqlite_only
def test_garbage_database_is_one_clear_error(home: Home) -> None:
    home.datafiles.mkdir()
    home.db.write_bytes(b"garbage" * 1000)
    r = omb(home, "topic", "list", check=False)
    assert r.returncode == 1 and "is not a usable event core" in r.stderr and "Traceback" not in r.stderr
    r = omb(home, "send", "a/b", "{}", check=False)
    assert r.returncode == 1 and "is not a usable event core" in r.stderr
    assert home.db.read_bytes() == b"garbage" * 1000

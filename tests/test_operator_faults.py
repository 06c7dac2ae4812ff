"""Every fault an operator can cause gets one clear answer, and nothing stored is lost.

End to end through the CLI, on real SQLite files: disabled or removed system parts, web
redirects, wrong homes, full and read-only disks (a tiny tmpfs, as root), a damaged event core,
numbers out of range, unsafe filters and &VARs, and the blind spots (attempts, status codes).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, status, wait_for
from conftest import run_ombridge as omb

from bridge.home import Home

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root (CI runs as root)")


def one_error(r: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exactly one line on stderr, ``ombridge: error: ...`` with ``words``, and exit ``code``."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("ombridge: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for word in words:
        assert word in r.stderr, (word, r.stderr)


def stored_events(home: Home) -> int:
    with sqlite3.connect(home.db) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


# -- nothing dropped silently ---------------------------------------------------------------------


def test_closes_are_refused_while_the_backsync_is_disabled(home: Home) -> None:
    omb(home, "close", "BEFORE")
    omb(home, "subscriber", "disable", "1")
    before = stored_events(home)
    one_error(omb(home, "close", "LOST?", check=False), 1, "disabled", "subscriber enable 1")
    one_error(omb(home, "close", "-", stdin="A\nB\n", check=False), 1, "disabled")
    assert stored_events(home) == before
    omb(home, "subscriber", "enable", "1")
    assert omb(home, "close", "AFTER").stdout.strip().isdigit()


def test_the_backsync_and_its_topic_cannot_be_removed(home: Home) -> None:
    one_error(omb(home, "topic", "remove", "event/update", "--force", check=False), 2, "system subscriber 1")
    one_error(omb(home, "subscriber", "remove", "1", "--force", check=False), 2, "system subscriber")
    assert "event/update" in omb(home, "topic", "list", "--json").stdout


def test_send_says_by_its_exit_code_that_nobody_listened(home: Home) -> None:
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    r = omb(home, "send", "task/add", '{"TASK": "T1"}', check=False)
    assert r.returncode == 3 and r.stdout == "" and "nobody listens" in r.stderr
    assert omb(home, "send", "task/add", '{"TASK": "T1"}', "--force").stdout.strip().isdigit()


def test_system_topics_exist_as_soon_as_the_home_does(home: Home, tmp_path: Path) -> None:
    told = tmp_path / "told"
    sid = omb(home, "subscriber", "add", "--command", f"echo &FILE > {told}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "ombacksync/error")  # no start or close needed first


# -- web subscribers ------------------------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1: /redirect answers 302 to /landing; every request path is recorded."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            hits.append(f"{self.command} {self.path}" + (f" auth={self.headers['Authorization']}"
                                                         if self.headers.get("Authorization") else ""))
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/landing")
                self.end_headers()
            else:
                self.send_response(200)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()


def test_a_redirect_is_a_failed_attempt_not_followed(home: Home, web: tuple[str, list[str]]) -> None:
    base, hits = web
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--url", f"{base}/redirect", "--retries", "0").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/add")
    omb(home, "start")
    try:
        omb(home, "send", "task/add", '{"TASK": "T1"}')
        wait_for(lambda: json.loads(omb(home, "deliveries", "list", "--status", "failed", "--json").stdout),
                 what="the redirected delivery failed")
    finally:
        omb(home, "stop")
    (row,) = json.loads(omb(home, "deliveries", "list", "--status", "failed", "--json").stdout)
    assert row["last_error"] == f"HTTP 302 redirect to {base}/landing not followed: configure the subscriber's URL"
    assert hits == ["POST /redirect"]  # never to /landing
    shown = omb(home, "deliveries", "show", str(row["id"])).stdout
    assert "HTTP 302, failed: HTTP 302 redirect" in shown and "redirect to" in shown


def test_credentials_go_in_a_secret_header_never_in_a_url(home: Home, web: tuple[str, list[str]]) -> None:
    base, hits = web
    one_error(omb(home, "subscriber", "add", "--url", "https://bob:s3cret@example.invalid/x", check=False), 2,
              "credentials", "--secret-header Authorization")
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--url", f"{base}/hook", "--secret-header", "Authorization",
              stdin="Bearer s3cret-token\n").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/add", "--sync")
    omb(home, "send", "task/add", '{"TASK": "T1"}')
    assert hits == ["POST /hook auth=Bearer s3cret-token"]
    for listing in (["subscriber", "list"], ["subscriber", "list", "--json"], ["subscriber", "show", sid, "--json"]):
        out = omb(home, *listing).stdout
        assert "s3cret" not in out, listing
    assert json.loads(omb(home, "subscriber", "show", sid, "--json").stdout)["secret_headers"] == ["Authorization"]
    one_error(omb(home, "subscriber", "add", "--command", "true", "--secret-header", "X", stdin="v\n", check=False),
              2, "web subscribers")


# -- a home is recognised, not invented -----------------------------------------------------------


def test_a_directory_that_is_no_home_is_refused(tmp_path: Path) -> None:
    typo = tmp_path / "hoem"
    for args in (["close", "X"], ["topic", "list"], ["start"], ["send", "a/b", "{}"], ["try", "X"]):
        one_error(omb(typo, *args, check=False), 2, str(typo), "ombridge init")
    r = omb(typo, "status", check=False)
    assert r.returncode == 4 and "not an ombridge home" in r.stderr
    assert not typo.exists()  # nothing created
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(omb(empty, "close", "X", check=False), 2, "not an ombridge home")
    assert list(empty.iterdir()) == []


# -- storage faults -------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def make_home(at: Path) -> Home:
    home = Home(at)
    home.script.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / "recorder.pl", home.script)
    return home


@ROOT_ONLY
def test_a_full_disk_is_one_sentence_and_loses_nothing(tiny_fs: Path) -> None:
    home = make_home(tiny_fs / "home")
    omb(home, "close", "KEPT-1", "KEPT-2")
    filler = tiny_fs / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"x" * 65536)
                f.flush()
        except OSError:
            pass
    for args in (["close", *[f"ID-{n}" for n in range(2000)]], ["send", "event/update", '{"ID": "X", "STATE": "closed"}']):
        one_error(omb(home, *args, check=False), 1, "full")
    filler.unlink()
    ids = [r["key"]["ID"] for r in json.loads(omb(home, "events", "list", "--json").stdout)]
    assert sorted(ids) == ["KEPT-1", "KEPT-2"]
    assert omb(home, "check", "--db").stdout.strip().endswith(": ok")


@ROOT_ONLY
def test_a_read_only_home_is_one_sentence(tiny_fs: Path) -> None:
    home = make_home(tiny_fs / "home")
    omb(home, "close", "KEPT")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    for args in (["close", "X"], ["start"], ["try", "X"]):
        r = omb(home, *args, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("ombridge: error: ") and r.stderr.count("\n") == 1, (args, r.stderr)
    assert omb(home, "status", check=False).returncode == 3


def test_a_damaged_event_core_is_reported_and_never_half_run(home: Home, tmp_path: Path) -> None:
    omb(home, "close", *[f"ID-{n}" for n in range(3000)])
    backup = tmp_path / "backup.db"
    omb(home, "backup", str(backup))
    assert stat_mode(backup) == 0o600
    one_error(omb(home, "backup", str(backup), check=False), 1, "exists")  # never overwritten
    data = bytearray(home.db.read_bytes())
    data[8192:len(data) - 4096] = os.urandom(len(data) - 12288)  # garbage in the middle, header kept
    home.db.write_bytes(bytes(data))
    r = omb(home, "check", "--db", check=False)
    assert r.returncode == 1 and "damaged" in r.stderr and "Traceback" not in r.stderr
    r = omb(home, "start", check=False)
    assert r.returncode == 1 and "damaged" in r.stderr and "Traceback" not in r.stderr
    assert omb(home, "status", check=False).returncode == 3  # refused, not half-running
    r = omb(home, "events", "list", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    # the backup taken before is sound and complete
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3000


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_numbers_are_refused_outside_sane_ranges(home: Home) -> None:
    for args in (["subscriber", "show", str(2**64)], ["subscriber", "set", "1", "--retries", str(2**63)],
                 ["subscriber", "set", "1", "--timeout", "inf"], ["subscriber", "set", "1", "--timeout", "nan"],
                 ["events", "list", "--limit", str(2**70)], ["retry", "--event", "-1"]):
        one_error(omb(home, *args, check=False), 2)
    r = omb(home, "start", "--metrics-textfile", str(home.root / "missing" / "x.prom"), check=False)
    one_error(r, 2, "does not exist")


# -- filters, &VARs and the shell -----------------------------------------------------------------


def test_filters_run_in_linear_time_and_unrunnable_ones_are_refused(home: Home, tmp_path: Path) -> None:
    out = tmp_path / "out"
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", f"echo &TASK >> {out}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/add", "--sync")
    # catastrophic for a backtracking engine: 2^40 steps on 40 characters; RE2 is linear
    omb(home, "subscriber", "filter", "add", sid, "task/add", "&TASK", "(a+)+b")
    assert omb(home, "send", "task/add", json.dumps({"TASK": "a" * 40}), check=False).returncode == 3
    assert omb(home, "send", "task/add", json.dumps({"TASK": "a" * 40 + "b"})).stdout.strip().isdigit()
    assert out.read_text().split() == ["a" * 40 + "b"]
    one_error(omb(home, "subscriber", "filter", "add", sid, "task/add", "&TOPIC", r"(x)\1", check=False), 2,
              "RE2", "backreferences")


def test_unknown_variables_are_refused_with_the_known_ones(home: Home) -> None:
    omb(home, "topic", "add", "task/add", "--key", "APPC", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--command", "logger 'task &TSK changed'").stdout.strip()
    one_error(omb(home, "subscriber", "topic", "add", sid, "task/add", check=False), 2,
              "&TSK", "&APPC, &EVENT, &KEY, &TASK, &TOPIC")
    good = omb(home, "subscriber", "add", "--command", "logger &TASK").stdout.strip()
    omb(home, "subscriber", "topic", "add", good, "task/add")
    one_error(omb(home, "subscriber", "filter", "add", good, "task/add", "&APC", "KE.*", check=False), 2,
              "&APC", "&APPC, &TASK, &TOPIC")


def test_vars_reparsed_by_a_second_shell_are_refused_unless_allowed(home: Home) -> None:
    for command in ('sh -c "echo &TASK"', "ssh backup-host 'close &TASK'", "su - ops -c 'x &TASK'", "eval echo &TASK"):
        one_error(omb(home, "subscriber", "add", "--command", command, check=False), 2, "second shell",
                  "--program")
    assert omb(home, "subscriber", "add", "--command", 'sh -c "echo &TASK"',
               "--allow-nested-shell").stdout.strip().isdigit()
    assert omb(home, "subscriber", "add", "--command", "echo &TASK; sh -c true").stdout.strip().isdigit()


# -- blind spots and wake-ups ---------------------------------------------------------------------


def test_retry_and_a_fixed_cause_are_delivered_at_once_with_output_shown(home: Home, tmp_path: Path) -> None:
    gate, out = tmp_path / "gate", tmp_path / "out"
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    sid = omb(home, "subscriber", "add", "--retries", "0", "--command",
              f"echo checking &TASK; test -e {gate} || {{ echo gate closed >&2; exit 7; }}; echo &TASK >> {out}"
              ).stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/add")
    omb(home, "start", "--poll", "3600")  # only the doorbell can wake it in time
    try:
        omb(home, "send", "task/add", '{"TASK": "T1"}')
        wait_for(lambda: json.loads(omb(home, "deliveries", "list", "--status", "failed", "--json").stdout),
                 what="the first attempt failed")
        (row,) = json.loads(omb(home, "deliveries", "list", "--status", "failed", "--json").stdout)
        shown = json.loads(omb(home, "deliveries", "show", str(row["id"]), "--json").stdout)
        (attempt,) = shown["attempt_log"]
        assert attempt["exit_status"] == 7 and attempt["error"] == "exit status 7"
        assert attempt["output"] == "checking T1\ngate closed\n"
        gate.touch()
        assert omb(home, "retry", "--delivery", str(row["id"])).stdout.strip() == "1 failed deliveries reopened"
        wait_for(lambda: out.exists(), timeout=10, what="delivered at once after retry, not at the next poll")
    finally:
        omb(home, "stop")
    assert omb(home, "deliveries", "show", str(row["id"])).stdout.count("attempt ") == 2
    log = (home.log_dir / "ombridge.log").read_text()
    assert (f"ERROR ombridge.manager: delivery {row['id']} (event {row['event_id']}, subscriber {sid}, attempt 1) "
            "failed, retries used up: exit status 7") in log


def test_actions_find_ombridge_on_a_bare_path(home: Home, tmp_path: Path) -> None:
    omb(home, "topic", "add", "task/add", "--key", "TASK")
    omb(home, "topic", "add", "task/done", "--key", "TASK")
    first = omb(home, "subscriber", "add", "--command",
                f"ombridge --home {home.root} send task/done \"{{\\\"TASK\\\": \\\"&TASK\\\"}}\" --force").stdout.strip()
    omb(home, "subscriber", "topic", "add", first, "task/add")
    omb(home, "start", env={"PATH": "/usr/bin:/bin"})  # as systemd starts it
    try:
        omb(home, "send", "task/add", '{"TASK": "T1"}')
        wait_for(lambda: json.loads(omb(home, "events", "list", "--topic", "task/done", "--json").stdout),
                 what="the follow-up event sent by the action")
    finally:
        omb(home, "stop")


def test_status_codes_follow_lsb(home: Home) -> None:
    assert omb(home, "status", check=False).returncode == 3
    assert omb(home, "status", "--bogus", check=False).returncode == 4
    home.script.write_bytes((FIXTURES / "syntax_error.pl").read_bytes())
    omb(home, "start")
    try:
        r = omb(home, "status", check=False)
        assert r.returncode == 1 and "degraded      ombacksync is syntax-error" in r.stdout
        assert status(home)["degraded"] == [
            "ombacksync is syntax-error"]
    finally:
        omb(home, "stop")


def test_prune_zero_needs_all(home: Home) -> None:
    one_error(omb(home, "prune", "--older-than", "0", check=False), 2, "--all")
    one_error(omb(home, "prune", check=False), 2, "--all")
    assert omb(home, "prune", "--all").stdout.startswith("pruned ")


def test_listings_are_plain_lines_when_piped(home: Home) -> None:
    omb(home, "topic", "add", "task/add", "--key", "TASK", "--description", "a task was added to an application")
    lines = omb(home, "topic", "list").stdout.splitlines()  # stdout is a pipe here
    assert lines[0].split("\t") == ["topic", "key fields", "subscribers", "description"]
    assert ["task/add", "TASK", "0", "a task was added to an application"] in [line.split("\t") for line in lines]

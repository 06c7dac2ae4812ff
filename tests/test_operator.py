"""Operator tooling: merged integrations, context variables, retention, metrics, service file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, snapshot, wait_for
from conftest import run_ombridge as omb

from bridge import store
from bridge.eventcore import catalog, deliveries, events, ledger, metrics
from bridge.eventcore.retention import parse_age, prune
from bridge.home import Home
from bridge.model import ActionKind

pytestmark = pytest.mark.all_stores  # on PostgreSQL too in `make test-stores` (tests/conftest_pg.py)


VENDOR = """use strict;
use warnings;
our $token;
my %seen;
sub record {{ my ($line) = @_; open(my $fh, '>>', "$ENV{{OvDataDir}}/tmp/{name}.txt") or die $!; print {{$fh}} "$line\\n"; close $fh }}
sub OMBackSync {{
    my ($op, $id) = @_;
    if ($op eq 'Init') {{ $token = '{name}-token'; return 1 }}
    die "{name} refused $id\\n" if $id =~ /^{refuse}/;
    exit 3 if $id =~ /^exit/;
    $seen{{$id}}++;
    record("$token $id $seen{{$id}}");
    return 1;
}}
1;
"""


def vendor(tmp_path: Path, name: str, refuse: str) -> Path:
    path = tmp_path / f"{name}.pl"
    path.write_text(VENDOR.format(name=name, refuse=refuse))
    return path


def lines(home: Home, name: str) -> list[str]:
    path = home.tmp / f"{name}.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_two_integrations_and_the_hand_written_script_are_all_called(home: Home, tmp_path: Path) -> None:
    original = home.script.read_bytes()
    omb(home, "integration", "add", "vendor-a", str(vendor(tmp_path, "vendor-a", "a-no")))
    omb(home, "integration", "add", "vendor_b", str(vendor(tmp_path, "vendor_b", "b-no")))
    assert [i["name"] for i in json.loads(omb(home, "integration", "list", "--json").stdout)] == ["vendor-a", "vendor_b"]
    assert omb(home, "check").returncode == 0
    r = omb(home, "try", "T-1", "a-no-2", "exit-3", check=False)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "OK   T-1",
        "ERR  a-no-2: integration vendor-a: vendor-a refused a-no-2",
        "ERR  exit-3: integration vendor-a: called exit(3); integration vendor_b: called exit(3)",
    ]
    assert lines(home, "vendor-a") == ["vendor-a-token T-1 1"]
    assert lines(home, "vendor_b") == ["vendor_b-token T-1 1", "vendor_b-token a-no-2 1"]  # the others went on
    assert [ln.split(" ", 3)[3] for ln in home.output.read_text().splitlines()[1:]] == ["T-1", "a-no-2", "exit-3"]
    text = home.script.read_text()
    assert "# --- integration vendor-a (from " in text and "# --- end of integration vendor_b" in text
    omb(home, "integration", "remove", "vendor-a")
    omb(home, "integration", "remove", "vendor_b")
    assert home.script.read_bytes() == original  # both gone: the hand-written script as it was


def test_adding_a_name_again_replaces_it_and_keeps_mode_and_backup(home: Home, tmp_path: Path) -> None:
    os.chmod(home.script, 0o640)
    omb(home, "integration", "add", "v", str(vendor(tmp_path, "v", "x")))
    before = home.script.read_text()
    r = omb(home, "integration", "add", "v", str(vendor(tmp_path, "v", "y")))
    assert "integration v replaced" in r.stdout
    assert home.script.read_text().count("# --- integration v ") == 1
    assert "=~ /^y/" in home.script.read_text()
    assert stat.S_IMODE(home.script.stat().st_mode) == 0o640
    assert home.script.with_name("OMBackSync.pl.bak").read_text() == before


@pytest.mark.parametrize("content,message", [
    ("sub OMBackSync { my $x = ; }\n1;\n", "conf/backsync/OMBackSync.pl line "),  # the merged file's line
    ("sub Other { 1 }\n1;\n", "does not define sub OMBackSync"),
    ("sub OMBackSync { print <DATA> }\n1;\n__DATA__\ndata\n", "reads its own __DATA__ section"),
])
def test_a_broken_integration_is_refused_and_the_script_untouched(home: Home, tmp_path: Path, content: str,
                                                                  message: str) -> None:
    source = tmp_path / "broken.pl"
    source.write_text(content)
    before = home.script.read_bytes(), home.script.stat().st_mode
    r = omb(home, "integration", "add", "broken", str(source), check=False)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr
    assert (home.script.read_bytes(), home.script.stat().st_mode) == before
    assert not list(home.script.parent.glob(".OMBackSync.*"))  # no temporary file left


def test_bad_names_and_missing_integrations(home: Home, tmp_path: Path) -> None:
    source = vendor(tmp_path, "v", "x")
    assert "bad integration name" in omb(home, "integration", "add", "1bad", str(source), check=False).stderr
    assert "no integration nope" in omb(home, "integration", "remove", "nope", check=False).stderr
    assert "cannot read" in omb(home, "integration", "add", "v", str(tmp_path / "missing.pl"), check=False).stderr
    omb(home, "integration", "add", "a-b", str(source))
    assert "clashes" in omb(home, "integration", "add", "a_b", str(source), check=False).stderr


def test_integrations_go_before_an_end_section(home: Home, tmp_path: Path) -> None:
    home.script.write_text(home.script.read_text() + "__END__\nsome notes\n")
    omb(home, "integration", "add", "v", str(vendor(tmp_path, "v", "x")))
    text = home.script.read_text()
    assert text.index("# <<< ombridge integrations") < text.index("__END__\nsome notes\n")
    assert omb(home, "try", "E-1").stdout == "OK   E-1\n"
    assert lines(home, "v") == ["v-token E-1 1"]


def test_a_running_supervisor_is_restarted_after_a_change(home: Home, tmp_path: Path) -> None:
    omb(home, "start")
    try:
        perl = json.loads(omb(home, "status", "--json").stdout)["ombacksync"]["pid"]
        r = omb(home, "integration", "add", "v", str(vendor(tmp_path, "v", "x")))
        assert "ombacksync restarted with the new script" in r.stdout
        st = json.loads(omb(home, "status", "--json").stdout)
        assert st["ombacksync"]["pid"] != perl and st["ombacksync"]["state"] == "running"
        omb(home, "close", "S-1")
        wait_for(lambda: lines(home, "v") == ["v-token S-1 1"], what="the integration called by the supervisor")
    finally:
        omb(home, "stop")


def test_context_variables_in_a_command_and_a_filter(home: Home, tmp_path: Path) -> None:
    apps = tmp_path / "apps.db"
    subprocess.run([str(Path(sys.executable).parent / "sqlite-utils"), "insert", str(apps), "applications", "-",
                    "--pk", "APAPPL"], check=True, text=True,
                   input=json.dumps([{"APAPPL": "KE1", "APAPNM": "Kernel", "APERPR": "alice"},
                                     {"APAPPL": "KE2", "APAPNM": "Other", "APERPR": "bob"}]))
    out = tmp_path / "out.txt"
    omb(home, "topic", "add", "task/change", "--key", "APPC", "--key", "TASK")
    assert omb(home, "context", "add", "task/*", "applications", "--db", str(apps), "--match", "APPC=APAPPL").stdout == "1\n"
    sid = omb(home, "subscriber", "add", "--command", f"echo '&TASK of &APAPNM for &APERPR' >> {out}").stdout.strip()
    omb(home, "subscriber", "topic", "add", sid, "task/change", "--sync")
    omb(home, "subscriber", "filter", "add", sid, "task/change", "&APERPR", "ali.*")
    omb(home, "send", "task/change", '{"APPC": "KE1", "TASK": "T1"}')
    # filtered out by the context column; no row: no variable, no match (exit 3: nobody listened)
    assert omb(home, "send", "task/change", '{"APPC": "KE2", "TASK": "T2"}', check=False).returncode == 3
    assert omb(home, "send", "task/change", '{"APPC": "NONE", "TASK": "T3"}', check=False).returncode == 3
    assert out.read_text() == "T1 of Kernel for alice\n"
    (stored,) = json.loads(omb(home, "events", "list", "--json").stdout)  # the context as an object, as the key
    assert stored["context"] == {"APAPPL": "KE1", "APAPNM": "Kernel", "APERPR": "alice"}, stored
    (shown,) = json.loads(omb(home, "deliveries", "list", "--json").stdout)
    assert json.loads(omb(home, "deliveries", "show", str(shown["id"]), "--json").stdout)["context"] == stored["context"]
    ctx = json.loads(omb(home, "context", "list", "--json").stdout)
    assert ctx[0]["matches"] == {"APPC": "APAPPL"} and ctx[0]["db_path"] == str(apps)
    omb(home, "context", "remove", "1")
    assert json.loads(omb(home, "context", "list", "--json").stdout) == []


@pytest.mark.sqlite_only
def test_context_from_the_event_core_and_async_delivery(home: Home, conn) -> None:
    conn.execute("CREATE TABLE tasks (FIAPPL TEXT, FIFIXN TEXT, FISHFD TEXT, FIPGMR TEXT)")
    conn.execute("INSERT INTO tasks VALUES ('KE1', 'T1', 'fix the login', 'carol')")
    catalog.add_topic(conn, "task/add", ["APPC", "TASK"])
    from bridge.eventcore.contexts import add_context
    add_context(conn, "task/add", "tasks", {"APPC": "FIAPPL", "TASK": "FIFIXN"})
    catalog.attach_topic(conn, catalog.add_subscriber(conn, ActionKind.COMMAND, "printf '%s/%s' &FISHFD &FIPGMR"), "task/add")
    events.send(conn, "task/add", {"APPC": "KE1", "TASK": "T1"})
    from bridge.delivery.manager import EventManager
    EventManager(home, store.Store(home), None, owner="test").drain(conn)
    assert conn.execute("SELECT output FROM attempts").fetchone()[0] == "fix the login/carol"


@pytest.mark.parametrize("args,message", [
    (["context", "add", "task/*", "nope", "--match", "APPC=X"], "no table nope"),
    (["context", "add", "task/*", "events", "--match", "APPC=nocolumn"], "has no column nocolumn"),
    (["context", "add", "task/*", "events", "--match", "APPC"], "use KEYFIELD=COLUMN"),
    (["context", "add", "task/add", "events", "--match", "NOPE=id"], "has no key field(s) NOPE"),
    (["context", "add", "Bad", "events", "--match", "APPC=id"], "bad topic pattern"),
    (["context", "add", "task/*", "t", "--db", "/nonexistent.db", "--match", "APPC=id"], "no SQLite file"),
    (["context", "remove", "9"], "no context 9"),
    (["prune", "--older-than", "soon"], "bad age"),
])
def test_bad_operator_input_is_refused(home: Home, args: list[str], message: str) -> None:
    omb(home, "topic", "add", "task/add", "--key", "APPC")
    conn = store.connect(home)
    before = snapshot(conn)
    r = omb(home, *args, check=False)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert snapshot(conn) == before


def test_prune_keeps_open_and_failed(home: Home, conn) -> None:
    from bridge.model import Attempt
    catalog.add_topic(conn, "job/end", ["N"])
    catalog.attach_topic(conn, catalog.add_subscriber(conn, ActionKind.COMMAND, "true", retries=0), "job/end")
    ids = [events.send(conn, "job/end", {"N": n}).event_id for n in range(3)]
    ok, bad = Attempt(True, 0, 0, 0), Attempt(False, 0, 0, 1, "", "exit status 1")
    first, second = deliveries.claim(conn, limit=2)
    deliveries.finish(conn, [(first, ok), (second, bad)])  # event 0 done, event 1 failed, event 2 open
    assert prune(conn, parse_age("1h")) == {"deliveries": 0, "attempts": 0, "events": 0}  # too young
    counts = prune(conn, 0, at=store.now() + 1)
    assert counts == {"deliveries": 1, "attempts": 1, "events": 1}
    left = [r[0] for r in conn.execute("SELECT event_id FROM subscriber_events ORDER BY event_id")]
    assert left == ids[1:] and ledger.backlog(conn) == {"open": 1, "failed": 1}
    assert [r[0] for r in conn.execute("SELECT id FROM events ORDER BY id")] == ids[1:]
    assert "pruned 0 deliveries" in omb(home, "prune", "--older-than", "7d").stdout


def test_metrics_text_and_textfile(home: Home, conn, tmp_path: Path) -> None:
    catalog.add_topic(conn, "job/end", ["N"])
    catalog.attach_topic(conn, catalog.add_subscriber(conn, ActionKind.COMMAND, "true"), "job/end")
    events.send(conn, "job/end", {"N": 1})
    text = metrics.render(conn, None)
    assert 'ombridge_deliveries{status="open"} 1' in text and "ombridge_up 0" in text
    assert "# TYPE ombridge_oldest_open_age_seconds gauge" in text
    prom = tmp_path / "ombridge.prom"
    omb(home, "metrics", "--textfile", str(prom))
    assert prom.read_text().startswith("# HELP ombridge_up")


def test_the_supervisor_keeps_the_metrics_textfile_fresh(home: Home, tmp_path: Path) -> None:
    prom = tmp_path / "ombridge.prom"
    omb(home, "start", "--metrics-textfile", str(prom), "--metrics-interval", "1")
    try:
        # ombacksync starts beside the supervisor: a later refresh shows it running
        wait_for(lambda: prom.exists() and "ombridge_up 1" in prom.read_text()
                 and 'ombridge_ombacksync_state{state="running"} 1' in prom.read_text(), what="metrics textfile")
        first = prom.stat().st_mtime_ns
        wait_for(lambda: prom.stat().st_mtime_ns != first, what="a refresh")
    finally:
        omb(home, "stop")


def test_systemd_unit_runs_the_supervisor_in_the_foreground() -> None:
    unit = (ROOT / "conf" / "systemd" / "ombridge.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert " start --foreground" in exec_start
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "[Install]" in unit


def test_start_refuses_a_bad_retention(home: Home) -> None:
    r = omb(home, "start", "--retention", "forever", check=False)
    assert r.returncode == 2 and "bad age" in r.stderr
    assert not home.run_dir.exists()  # nothing was started

"""The life of ombacksync as operators meet it: a forking script closes each ID exactly once,
a slow Init does not block status, a stop lets the script and what it started finish (within
the grace period) and leaves no process behind."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from compat.harness import home_processes
from conftest import run_ombridge as omb
from conftest import status, wait_for

from bridge.errors import PerlStartError
from bridge.home import Home
from bridge.ombacksync.perlhost import HostSettings, HostState, PerlHost

FORKING = r"""use strict;
use warnings;
sub record { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/$_[0]") or die $!; print {$fh} "$_[1]\n"; close $fh }
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    my $pid = fork;
    die "cannot fork: $!" unless defined $pid;
    if (!$pid) {
        record('closed.txt', $id);     # the child closes the ticket...
        die "child of $id dies\n" if $id =~ /7$/;    # ...and some children die instead of exiting
        exit 0;
    }
    waitpid($pid, 0);
    record('parent.txt', "$id " . ($? >> 8));
    return 1;
}
1;
"""



def counts(home: Home, name: str) -> Counter[str]:
    path = home.tmp / name
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


IDS = [f"F-{n}" for n in range(200)]


def test_a_forking_script_closes_each_id_exactly_once_through_try(home: Home) -> None:
    home.script.write_text(FORKING)
    r = omb(home, "try", "--json", *IDS)
    outcomes = json.loads(r.stdout)
    assert [o["id"] for o in outcomes] == IDS and all(o["ok"] for o in outcomes)
    assert counts(home, "closed.txt") == Counter(IDS)  # 200 closes, no duplicate
    parents = counts(home, "parent.txt")
    assert sum(parents.values()) == 200
    status = dict(line.split() for line in parents)
    # a child that died exited as perl's die exits (errno or 255), the others with 0
    assert all((status[i] != "0") == i.endswith("7") for i in IDS)
    assert home_processes(home.root) == []


def test_a_forking_script_closes_each_id_exactly_once_through_the_supervisor(home: Home) -> None:
    home.script.write_text(FORKING)
    omb(home, "start")
    try:
        omb(home, "close", *IDS)
        wait_for(lambda: sum(counts(home, "parent.txt").values()) >= 200, timeout=120, what="200 closes")
        wait_for(lambda: status(home)["backlog"]["open"] == 0,
                 what="backlog drained")
        backlog = status(home)["backlog"]
        assert backlog == {"open": 0, "failed": 0}
        assert status(home)["ombacksync"]["restarts"] == 0
    finally:
        omb(home, "stop", check=False)
    assert counts(home, "closed.txt") == Counter(IDS)
    assert sum(counts(home, "parent.txt").values()) == 200
    wait_for(lambda: home_processes(home.root) == [], timeout=15, what="no process of the home left")


SLOW_INIT = r"""use strict;
use warnings;
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') { select(undef, undef, undef, $ENV{OMB_TEST_INIT_SECONDS} || 4); return 1 }
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/closed.txt") or die $!;
    print {$fh} "$id\n";
    close $fh;
    return 1;
}
1;
"""


def test_status_answers_at_once_while_a_slow_init_runs(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    home.script.write_text(SLOW_INIT)
    omb(home, "close", "S-1")
    omb(home, "subscriber", "set", "1", "--timeout", "2")  # Init must not be held to the call timeout
    monkeypatch.setenv("OMB_TEST_INIT_SECONDS", "8")
    omb(home, "start")  # returns once the supervisor is up, although Init still runs
    try:
        started = time.monotonic()
        r = omb(home, "status", check=False)
        assert time.monotonic() - started < 5  # no waiting behind Init
        assert r.returncode == 1 and "ombacksync    starting, Init running for" in r.stdout
        st = status(home)["ombacksync"]
        assert st["state"] == "starting" and st["init_running_for"] >= 0 and st["pid"]
        wait_for(lambda: (home.tmp / "closed.txt").exists(), timeout=90, what="Init done and S-1 closed")
        st = status(home)["ombacksync"]
        assert st["state"] == "running" and st["restarts"] == 0  # not killed by the call timeout
        assert omb(home, "status", check=False).returncode == 0
    finally:
        omb(home, "stop", check=False)


def test_a_stop_does_not_wait_for_a_slow_init(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    home.script.write_text(SLOW_INIT)
    monkeypatch.setenv("OMB_TEST_INIT_SECONDS", "600")
    omb(home, "start")
    wait_for(lambda: status(home)["ombacksync"]["pid"],
             what="Init running")
    started = time.monotonic()
    omb(home, "stop")
    assert time.monotonic() - started < 30
    wait_for(lambda: home_processes(home.root) == [], timeout=15, what="no process of the home left")


def test_once_closing_down_no_start_begins_not_even_the_retry_after_the_abandoned_one(
        home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    # The race behind a stop that waited 120 s: the abandoned start left BACKOFF due at once, and the
    # backsync lane's ensure_running started a new Init of ten minutes beside the shutdown.
    home.script.write_text(SLOW_INIT)
    monkeypatch.setenv("OMB_TEST_INIT_SECONDS", "600")
    host = PerlHost(home)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            host.start()
        except Exception as exc:
            failed.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    wait_for(lambda: host.snapshot()["pid"], what="Init running")
    host.close_down()
    starter.join(30)
    assert not starter.is_alive() and len(failed) == 1 and host.state is HostState.BACKOFF
    assert host.retry_at is not None and host.clock() >= host.retry_at  # a retry would be due at once...
    assert host.ensure_running() is False and host.state is HostState.BACKOFF  # ...but none begins
    with pytest.raises(PerlStartError, match="^ombridge is stopping: ombacksync is not started$"):
        host.start()
    host.stop()
    assert host.state is HostState.STOPPED and home_processes(home.root) == []


def test_init_timeout_is_its_own_setting(home: Home) -> None:
    home.script.write_text(SLOW_INIT)
    host = PerlHost(home, settings=HostSettings(init_timeout=0.5))
    with pytest.raises(Exception, match=r"Init'\) failed: Init timed out after 0.5s"):
        host.start()
    assert host.state is HostState.BACKOFF and home_processes(home.root) == []


STOPPING = r"""use strict;
use warnings;
sub trace { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/trace.txt") or die $!; print {$fh} "@_\n"; close $fh }
$SIG{TERM} = sub { trace('TERM handler') };
END { trace('END block') }
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    # a background close that takes a while, and a stray process that never ends
    system(qq{sh -c 'sleep 1; echo "background close of $id" >> "\$OvDataDir/tmp/trace.txt"' &});
    system(q{sleep 3600 &}) if $id eq 'stray';
    return 1;
}
1;
"""


def test_a_stop_runs_the_handlers_waits_for_what_the_script_started_then_kills_the_rest(home: Home) -> None:
    home.script.write_text(STOPPING)
    host = PerlHost(home, settings=HostSettings(stop_grace=3))
    host.start()
    assert all(o.ok for o in host.close_many(["B-1", "stray"]))
    started = time.monotonic()
    host.stop()
    took = time.monotonic() - started
    lines = (home.tmp / "trace.txt").read_text().splitlines()
    assert lines[:2] == ["TERM handler", "END block"]
    assert sorted(lines[2:]) == ["background close of B-1", "background close of stray"]  # given the time
    assert 2.5 < took < 10  # the stray sleep held the stop for the grace period, then was killed
    wait_for(lambda: home_processes(home.root) == [], timeout=5, what="the stray process killed")


def test_a_fault_restart_kills_at_once(home: Home) -> None:
    home.script.write_text(STOPPING.replace("return 1 if $op eq 'Init';", "return 1 if $op eq 'Init'; sleep 60 if $id eq 'hang';"))
    host = PerlHost(home, timeout=0.5, settings=HostSettings(stop_grace=30))
    host.start()
    started = time.monotonic()
    outcome = host.close("hang")
    assert not outcome.ok and "timed out" in (outcome.error or "")
    assert time.monotonic() - started < 10  # no grace for a hung child
    wait_for(lambda: home_processes(home.root) == [], timeout=5, what="the hung child killed")
    assert not (home.tmp / "trace.txt").exists()  # killed: no handler, no END block

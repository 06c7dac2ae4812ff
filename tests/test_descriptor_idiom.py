"""Issue 22, item 2: a script that closes the descriptors it inherited (``POSIX::close($_) for
3 .. 63`` before it runs a ticket program) through a real supervisor: the protocol is out of its
way, and a script that does destroy the channel fails that one ID, never closing it twice."""

from __future__ import annotations

import json
import logging
from collections import Counter

from compat.harness import home_processes
from conftest import run_ombridge as omb
from conftest import wait_for

from bridge.home import Home
from bridge.ombacksync.perlhost import PerlHost

SCRIPT = r"""use strict;
use warnings;
use POSIX ();
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/closed.txt") or die $!;
    print {$fh} "$id\n";
    close $fh;
    POSIX::close($_) for 3 .. LAST;
    system('true') == 0 or die "ticket program failed: $?";
    return 1;
}
1;
"""
IDS = [f"D-{n}" for n in range(30)]


def closed(home: Home) -> Counter[str]:
    path = home.tmp / "closed.txt"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def deliveries(home: Home) -> list[dict]:
    return json.loads(omb(home, "deliveries", "list", "--limit", "1000", "--json").stdout)


def run_supervised(home: Home, last: str, ids: list[str]) -> list[dict]:
    """Close ``ids`` through a started supervisor (one attempt each); the deliveries once all ended."""
    home.script.write_text(SCRIPT.replace("LAST", last))
    omb(home, "close", *ids)
    omb(home, "subscriber", "set", "1", "--retries", "0")
    omb(home, "start")
    try:
        wait_for(lambda: all(d["status"] in ("done", "failed") for d in deliveries(home)),
                 timeout=120, what="every delivery ended")
        return deliveries(home)
    finally:
        omb(home, "stop", check=False)
        wait_for(lambda: home_processes(home.root) == [], timeout=20, what="no process of the home left")


def test_closing_3_to_63_leaves_the_protocol_alone_and_closes_each_id_once(home: Home) -> None:
    ended = run_supervised(home, "63", IDS)
    assert sorted(d["key"]["ID"] for d in ended) == sorted(IDS)
    assert all(d["status"] == "done" for d in ended), ended
    assert closed(home) == Counter(IDS)  # each Close ran once: no restart, no replay


def test_a_script_that_closes_every_descriptor_fails_each_id_once_with_a_reason(home: Home) -> None:
    # (each failure restarts the host after a growing backoff: a few IDs only)
    ended = run_supervised(home, "POSIX::sysconf(POSIX::_SC_OPEN_MAX())", IDS[:4])
    assert all(d["status"] == "failed" for d in ended), ended
    for d in ended:
        assert ("protocol descriptors" in d["last_error"] or "exited with status 4" in d["last_error"]), d
    assert closed(home) == Counter(IDS[:4])  # the channel's end is no reason to run a Close again
    log = "".join(p.read_text() for p in home.root.joinpath("log").glob("*.log*"))
    assert "OMBackSync closed or replaced the ombridge host's protocol descriptors" in log


def test_a_script_that_closes_every_descriptor_while_it_loads_fails_to_start(home: Home) -> None:
    home.script.write_text("use POSIX ();\nPOSIX::close($_) for 3 .. POSIX::sysconf(POSIX::_SC_OPEN_MAX());\n"
                           "sub OMBackSync { 1 }\n1;\n")
    r = omb(home, "try", "T-1", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "the script, while it loaded, closed or replaced the ombridge host's protocol descriptors" in r.stderr


def test_a_call_that_closes_one_of_the_host_s_descriptors_fails_alone_and_the_next_ones_run(
        home: Home, caplog) -> None:
    # The host answers that call (ERR), exits 5, and the Closes pipelined behind it were never
    # read: given back, not attempted, and run by the next host (they were blamed for its exit).
    caplog.set_level(logging.INFO, logger="ombridge.script")
    for fd in (4095, 4093):  # the host's requests; its copy of the output pipe
        home.script.write_text("use POSIX ();\nsub OMBackSync { my ($op, $id) = @_; print \"$op \", $id // '-', "
                               f"\"\\n\"; POSIX::close({fd}) if ($id // '') eq 'breaks'; 1 }}\n1;\n")
        with PerlHost(home, timeout=10) as host:
            first, breaks, after = host.close_many(["T-1", "breaks", "T-3"])
            assert first.ok and not breaks.ok and breaks.attempted and not after.attempted
            assert breaks.error.startswith("OMBackSync closed or replaced the ombridge host's protocol descriptors")
            if fd == 4095:  # the output copy is there to end the call's output with a mark
                assert breaks.output == "Close breaks\nombridge host: " + breaks.error + "\n"
            (again,) = host.close_many(["T-3"])
            assert again.ok and again.output == "Close T-3\n"
    assert caplog.text.count("Close breaks") == 2  # in the log in both cases
    assert "Warning" not in caplog.text  # nothing of perl's own about the closed descriptors

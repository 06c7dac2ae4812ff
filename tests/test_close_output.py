"""Issue 22, item 5: each Close keeps the tail of its own output (what it printed, warned, and what
the programs it ran wrote) with its attempt, whatever the log's byte budget dropped: through the
host (real perl), through a real supervisor to `deliveries show`, and on the console's page."""

from __future__ import annotations

import html
import json

from conftest import run_ombridge as omb
from conftest import wait_for
from console_support import login

from bridge.home import Home
from bridge.model import OUTPUT_TAIL
from bridge.ombacksync.perlhost import HostSettings, PerlHost

SCRIPT = r"""use strict;
use warnings;
$| = 1;    # every line at once, in the order printed (perl buffers STDOUT on a pipe otherwise)
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    print "opening ticket for $id\n";
    if ($id =~ /^flood/) {
        print "debug line $_ of $id " . ('.' x 80) . "\n" for 1 .. 5000;    # ~0.5 MB: far past the budget
    }
    warn "ticket tool says: $id refused\n" if $id =~ /bad/;
    system('echo', "program output for $id") == 0 or die "echo failed";
    die "ticket for $id not closed\n" if $id =~ /bad/;
    if ($id =~ /^hang/) { print "about to hang on $id\n"; sleep 60; }
    if ($id =~ /^crash/) { print "about to crash on $id\n"; kill 'KILL', $$; }
    return 1;
}
1;
"""


def host(home: Home, timeout: float = 5.0) -> PerlHost:
    home.script.write_text(SCRIPT)
    return PerlHost(home, timeout=timeout, settings=HostSettings(init_timeout=timeout))


def test_each_close_carries_its_own_output_and_no_other(home: Home) -> None:
    with host(home) as h:
        a, bad, c = h.close_many(["A-1", "bad-2", "C-3"])
    assert a.ok and a.output == "opening ticket for A-1\nprogram output for A-1\n"
    assert not bad.ok and bad.error == "ticket for bad-2 not closed"
    assert bad.output == "opening ticket for bad-2\nticket tool says: bad-2 refused\nprogram output for bad-2\n"
    assert c.output == "opening ticket for C-3\nprogram output for C-3\n"


def test_a_flood_keeps_only_its_last_bytes(home: Home) -> None:
    with host(home) as h:
        (flood,) = h.close_many(["flood-1"])
    assert flood.ok and len(flood.output.encode()) <= OUTPUT_TAIL
    assert flood.output.endswith("debug line 5000 of flood-1 " + "." * 80 + "\nprogram output for flood-1\n")


def test_a_call_that_hangs_or_dies_keeps_what_it_printed(home: Home) -> None:
    with host(home, timeout=1.0) as h:
        (hang,) = h.close_many(["hang-1"])
        (crash,) = h.close_many(["crash-2"])
    assert not hang.ok and "timed out" in hang.error
    assert hang.output.endswith("program output for hang-1\nabout to hang on hang-1\n")
    assert not crash.ok and "SIGKILL" in crash.error
    assert crash.output.endswith("about to crash on crash-2\n")


def test_the_failing_close_shows_its_output_though_the_log_dropped_it(home: Home, listening) -> None:
    home.script.write_text(SCRIPT)
    omb(home, "close", "flood-1", "bad-flood-2")
    omb(home, "subscriber", "set", "1", "--retries", "0")
    srv = listening()
    rows = lambda: json.loads(omb(home, "deliveries", "list", "--json").stdout)  # noqa: E731
    wait_for(lambda: all(r["status"] in ("done", "failed") for r in rows()), timeout=60, what="both Closes ended")
    by_id = {r["key"]["ID"]: str(r["id"]) for r in rows()}
    log = lambda: "".join(p.read_text() for p in home.root.joinpath("log").glob("*.log*"))  # noqa: E731
    wait_for(lambda: "not logged: output above" in log(), timeout=20, what="the log's note of what it dropped")
    assert "ticket tool says: bad-flood-2 refused" not in log()  # over the budget: the log dropped it

    shown = json.loads(omb(home, "deliveries", "show", by_id["bad-flood-2"], "--json").stdout)
    (attempt,) = shown["attempt_log"]
    assert attempt["error"] == "ticket for bad-flood-2 not closed"
    assert attempt["output"].endswith("ticket tool says: bad-flood-2 refused\nprogram output for bad-flood-2\n")
    text = omb(home, "deliveries", "show", by_id["bad-flood-2"]).stdout
    assert "ticket tool says: bad-flood-2 refused" in text

    page = login(srv).get(f"/ui/deliveries/{by_id['bad-flood-2']}").text
    assert html.escape("ticket tool says: bad-flood-2 refused", quote=False) in page

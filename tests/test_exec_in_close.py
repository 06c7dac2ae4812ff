"""Issue 29, item 5: `exec` in a Close. The program takes the perl host's place and runs to its end
(as under plain perl: not killed after a second); the Close fails with one reason that names the
program and how it ended, and it is final (never retried behind the operator's back); the host
starts again for the next Close. The suite's case `exec_in_close` compares it with plain perl
through `try` and a supervisor; these are the host-level details."""

from __future__ import annotations

from bridge.home import Home
from bridge.ombacksync.perlhost import HostSettings, PerlHost

SCRIPT = r"""use strict;
use warnings;
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    my $ran = "$ENV{OvDataDir}/tmp/ran.txt";
    print "handing $id over\n";
    exec('sh', '-c', 'sleep 1.5; echo "slow tool closed $1" >> "$2"; echo "slow tool: done"', 'x', $id, $ran)
        if $id =~ /^slow/;
    exec('true') if $id =~ /^quick/;
    exec($^X, '-e', 'open(my $f, ">>", $ARGV[1]) or die; print {$f} "perl closed $ARGV[0]\n"', $id, $ran)
        if $id =~ /^perl/;
    exec('sleep', '30') if $id =~ /^stuck/;
    if ($id =~ /^missing/) { exec('/nonexistent/ticket-tool') or die "cannot run the ticket tool: $!\n" }
    return 1;
}
1;
"""


def host(home: Home, timeout: float = 10.0) -> PerlHost:
    home.script.write_text(SCRIPT)
    return PerlHost(home, timeout=timeout, settings=HostSettings(init_timeout=timeout))


def ran(home: Home) -> list[str]:
    path = home.tmp / "ran.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_the_program_runs_to_its_end_and_the_close_fails_once_for_good(home: Home) -> None:
    with host(home) as h:
        slow, after = h.close_many(["slow-1", "T-2"])
        assert not slow.ok and slow.final and slow.attempted
        assert slow.error.startswith("OMBackSync called exec: the perl host was replaced by sh, "
                                     "which exited with status 0; this Close is not run again")
        assert slow.output == "handing slow-1 over\nslow tool: done\n"
        assert ran(home) == ["slow tool closed slow-1"]  # once, and not killed after a second
        assert not after.attempted  # pipelined behind it: it never reached the script
        (again,) = h.close_many(["T-2"])  # the host starts again (Init) and serves
        assert again.ok and h.restarts == 1


def test_a_program_that_ends_at_once_or_is_perl_itself_is_seen(home: Home) -> None:
    with host(home) as h:
        quick, after = h.close_many(["quick-1", "T-2"])  # ended before the bridge looked: a zombie's name
        (perl,) = h.close_many(["perl-2"])
    assert quick.final and "replaced by true, which exited with status 0" in quick.error
    assert not after.attempted
    assert perl.final and "replaced by perl, which exited with status 0" in perl.error
    assert ran(home) == ["perl closed perl-2"]


def test_a_program_still_running_at_the_call_timeout_is_killed_and_the_close_is_final(home: Home) -> None:
    with host(home, timeout=1.0) as h:
        (stuck,) = h.close_many(["stuck-1"])
    assert stuck.final
    assert "replaced by sleep, which still ran at the call timeout (1s) and was killed" in stuck.error


def test_an_exec_that_fails_is_the_script_s_own_error(home: Home) -> None:
    with host(home) as h:
        (missing,) = h.close_many(["missing-1"])
        assert h.restarts == 0
    assert not missing.ok and not missing.final
    assert missing.error == "cannot run the ticket tool: No such file or directory"

"""Issue 22, item 3: ``integration add`` of a script that defines its own exception classes and
then says ``package main;`` is merged so that it works (as plain perl runs the standalone
script); one whose ``OMBackSync`` would land anywhere else is refused at ``add``, with why."""

from __future__ import annotations

from pathlib import Path

from compat.harness import Case, fresh, run_reference, run_try
from conftest import run_ombridge as omb

from bridge.home import Home

VENDOR = r"""use strict;
use warnings;

package Vendor::Error;
sub new { my ($class, %args) = @_; return bless {%args}, $class }
sub throw { my $class = shift; die $class->new(@_) }
sub message { $_[0]{message} }

package main;

my $calls = 0;
sub helper { return "call " . ++$calls }

sub OMBackSync {
    my ($op, $id) = @_;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/vendor.txt") or die $!;
    print {$fh} "$op ", ($id // '-'), " (", helper(), ")\n";
    my $ok = eval { Vendor::Error->throw(message => "ticket $id refused") if ($id // '') =~ /bad/; 1 };
    print {$fh} "refused: ", $@->message, "\n" unless $ok;
    close $fh;
    Vendor::Error->throw(message => "vendor is down for $id") if ($id // '') =~ /down/;
    return 1;
}
1;
"""
HAND_WRITTEN = "use strict;\nuse warnings;\n1;\n"


def test_package_main_is_merged_and_runs_as_the_standalone_script_runs_in_plain_perl(
        home: Home, tmp_path: Path) -> None:
    ids = ["V-1", "bad-2", "down-3"]
    plain_case = Case("vendor", {"OMBackSync.pl": VENDOR.encode()}, ids)
    plain = run_reference(fresh(tmp_path / "plain", plain_case), plain_case)

    home.script.write_text(HAND_WRITTEN)
    source = tmp_path / "vendor.pl"
    source.write_text(VENDOR)
    assert omb(home, "integration", "add", "vendor", str(source)).stdout.startswith("integration vendor added\n")
    merged_case = Case("merged", {"OMBackSync.pl": home.script.read_bytes()}, ids)
    bridged = run_try(fresh(tmp_path / "bridged", merged_case), merged_case)

    assert plain.outcomes[:3] == bridged.outcomes[:3] == ["Init OK", f"Close {b'V-1'.hex()} OK",
                                                          f"Close {b'bad-2'.hex()} OK"]
    # the die of an object reaches ombridge through the dispatcher, named after the integration,
    # and as readable as the standalone script's own (issue 29, 8): not Vendor::Error=HASH(0x...)
    head = f"Close {b'down-3'.hex()} ERR "
    assert plain.outcomes[3] == head + """bless( {"message" => "vendor is down for down-3"}, 'Vendor::Error' )"""
    assert bridged.outcomes[3] == plain.outcomes[3].replace(head, head + "integration vendor: ")
    trace = {k: v for k, v in bridged.files.items() if k.startswith("tmp/")}
    assert trace == {k: v for k, v in plain.files.items() if k.startswith("tmp/")}
    assert b"refused: ticket bad-2 refused" in trace["tmp/vendor.txt"]


def test_an_integration_whose_ombacksync_is_in_another_package_is_refused_at_add(
        home: Home, tmp_path: Path) -> None:
    source = tmp_path / "other.pl"
    source.write_text("package Vendor::Client;\nsub OMBackSync { 1 }\n1;\n")
    before = home.script.read_bytes()
    r = omb(home, "integration", "add", "other", str(source), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "integration other does not define OMBackSync in its own package once merged" in r.stderr
    assert home.script.read_bytes() == before
    assert "other" not in omb(home, "integration", "list").stdout

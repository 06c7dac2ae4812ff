"""Merged integrations behave as the standalone scripts did: their files beside the script are
found, any hand-written text survives add and remove byte for byte, POD and __END__ are handled,
and a retry calls only the integrations that failed."""

from __future__ import annotations

from pathlib import Path

from compat.harness import Case, fresh, run_reference, run_try
from conftest import run_ombridge as omb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.home import Home
from bridge.ombacksync import integrations
from bridge.ombacksync.integrations import (
    BEGIN,
    END,
    POD_CLOSER,
    Integration,
    join,
    split,
)

TRICKY_LINES = [
    "# closes tickets (ServiceNow)", "sub OMBackSync { 1 }", "1;", "}", "{", "=pod", "=head1 NAME", "=cut", "",
    "__END__", "__DATA__", "# --- integration x (from somewhere)", "# --- end of integration x",
    "# --- dispatcher: not really", "{ package OMBridge::Integration::x;", '#line 1 "integration x"',
    "print <<EOT;", "EOT", "\t  indented (with parens)", "ünïcødé ✓", "form\x0cfeed", "carriage\r",
]
line = st.one_of(st.sampled_from(TRICKY_LINES),
                 st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=30))
text = st.lists(line, max_size=12).map("\n".join) | st.lists(line, max_size=12).map(lambda ls: "\n".join(ls) + "\n")
code = text.filter(lambda t: all(m not in t for m in (BEGIN, END, "# --- end of integration", POD_CLOSER)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=text.filter(lambda t: BEGIN not in t and END not in t),
       codes=st.lists(code.map(lambda c: c.split("__END__")[0].split("__DATA__")[0]), min_size=1, max_size=3))
def test_add_list_remove_gives_back_the_original_byte_for_byte(original: str, codes: list[str]) -> None:
    head, found, tail = split(original)
    assert found == [] and head + tail == original
    merged_ones = [Integration(f"v{n}", f"from /x/v{n}.pl (copy), today", c) for n, c in enumerate(codes)]
    merged = join(head, merged_ones, tail)
    head2, listed, tail2 = split(merged)
    assert (head2, tail2) == (head if not head or head.endswith("\n") else head + "\n", tail)
    assert [(i.name, i.info) for i in listed] == [(i.name, i.info) for i in merged_ones]
    assert [i.code for i in listed] == [c if c.endswith("\n") or not c else c + "\n" for c in codes]
    for n in range(len(listed)):  # remove one after the other, as `integration remove` does
        listed = listed[1:]
        merged = join(head2, listed, tail2)
        head2, again, tail2 = split(merged)
        assert [i.name for i in again] == [i.name for i in listed]
    assert merged in (original, head + "\n" + tail)
    if head.endswith("\n") or not head:
        assert merged == original



VENDOR_BESIDE = """use strict;
use warnings;
use File::Basename qw(dirname);
my $endpoint;
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') {
        open(my $in, '<', dirname(__FILE__) . '/vendor.conf') or die "no vendor.conf beside " . __FILE__ . ": $!";
        chomp($endpoint = <$in>);
    }
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/vendor.txt") or die $!;
    print {$fh} "$op ", ($id // '-'), " via $endpoint, line ", __LINE__, " of ", __FILE__, ", \\$0 $0\\n";
    close $fh;
    return 1;
}
1;
__END__

=head1 NAME

vendor - closes tickets (ServiceNow)

=cut
"""

HAND_WRITTEN = """# closes tickets (ServiceNow)
use strict;
use warnings;
sub OMBackSync { return 1 }
1;

=head1 NOTES

documentation left open at the end of the file
"""


def test_a_merged_integration_finds_its_files_and_runs_as_plain_perl_runs_the_merged_file(
        home: Home, tmp_path: Path) -> None:
    home.script.write_text(HAND_WRITTEN)
    (home.script.parent / "vendor.conf").write_text("https://tickets.invalid/api\n")
    source = tmp_path / "vendor.pl"
    source.write_text(VENDOR_BESIDE)
    omb(home, "integration", "add", "vendor", str(source))
    assert "vendor" in omb(home, "integration", "list").stdout.split()
    merged = home.script.read_bytes()
    assert POD_CLOSER.encode() in merged  # the open POD of the hand-written part was closed
    case = Case("merged", {"OMBackSync.pl": merged, "vendor.conf": b"https://tickets.invalid/api\n"}, ["M-1", "M 2"])
    plain = run_reference(fresh(tmp_path / "plain", case), case)
    bridged = run_try(fresh(tmp_path / "bridged", case), case)
    assert plain.outcomes == bridged.outcomes == ["Init OK", f"Close {b'M-1'.hex()} OK", f"Close {b'M 2'.hex()} OK"]
    assert plain.files == bridged.files
    trace = bridged.files["tmp/vendor.txt"].decode()
    assert "via https://tickets.invalid/api" in trace and "of <home>/conf/backsync/OMBackSync.pl" in trace
    lineno = merged.decode().splitlines().index("    print {$fh} \"$op \", ($id // '-'), \" via $endpoint, line \", "
                                                "__LINE__, \" of \", __FILE__, \", \\$0 $0\\n\";") + 1
    assert f"line {lineno} of" in trace  # the merged file's own line numbers
    omb(home, "integration", "remove", "vendor")
    assert home.script.read_text() == HAND_WRITTEN


FLAKY = """use strict;
use warnings;
sub OMBackSync {{
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    open(my $fh, '>>', "$ENV{{OvDataDir}}/tmp/{name}.txt") or die $!;
    print {{$fh}} "$id\\n";
    close $fh;
    die "{name} is down\\n" if -e "$ENV{{OvDataDir}}/tmp/{name}.down";
    return 1;
}}
1;
"""


def test_a_retry_calls_only_the_integrations_that_failed(home: Home, tmp_path: Path) -> None:
    home.script.write_text("sub OMBackSync { 1 }\n1;\n")
    for name in ("healthy", "flaky"):
        (tmp_path / f"{name}.pl").write_text(FLAKY.format(name=name))
        omb(home, "integration", "add", name, str(tmp_path / f"{name}.pl"))
    home.tmp.mkdir(exist_ok=True)
    (home.tmp / "flaky.down").touch()
    first = omb(home, "try", "R-1", "R-2", check=False)
    assert first.stdout.splitlines() == ["ERR  R-1: integration flaky: flaky is down",
                                         "ERR  R-2: integration flaky: flaky is down"]
    again = omb(home, "try", "R-1", check=False)  # still down: healthy is not called again
    assert again.returncode == 1
    (home.tmp / "flaky.down").unlink()
    assert omb(home, "try", "R-1", "R-2").stdout.splitlines() == ["OK   R-1", "OK   R-2"]
    assert (home.tmp / "healthy.txt").read_text().splitlines() == ["R-1", "R-2"]  # once each
    assert (home.tmp / "flaky.txt").read_text().splitlines() == ["R-1", "R-2", "R-1", "R-1", "R-2"]
    assert not list((home.datafiles / "integrations").iterdir())  # all closed: nothing remembered
    assert omb(home, "try", "R-1").stdout == "OK   R-1\n"  # a new close later calls every part
    assert (home.tmp / "healthy.txt").read_text().splitlines() == ["R-1", "R-2", "R-1"]


def test_integration_source_with_pod_after_end_is_merged(home: Home, tmp_path: Path) -> None:
    source = tmp_path / "podded.pl"
    source.write_text("sub OMBackSync { 1 }\n1;\n__END__\n\n=head1 NAME\n\npodded - docs (with parens)\n")
    omb(home, "integration", "add", "podded", str(source))
    assert [i.name for i in integrations.list_integrations(home)] == ["podded"]
    assert omb(home, "try", "P-1").stdout == "OK   P-1\n"

#!/usr/bin/perl -w
# $SIG{__WARN__} sees the script's warnings, -w ones included, and none of the host's.
use strict;

sub trace { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/warnings.txt") or die $!; print {$fh} "@_"; close $fh }
$SIG{__WARN__} = sub { trace("__WARN__ saw: $_[0]") };

sub OMBackSync {
    my ($op, $id) = @_;
    warn "careful with $op\n";
    my %h;
    my $x = "value: " . $h{missing};    # Use of uninitialized value (warnings are on)
    return 1;
}
1;

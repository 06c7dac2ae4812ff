#!/usr/bin/perl -Tw
# -T and -w on the #! line: plain perl runs it with taint checks and warnings on.
use strict;

sub OMBackSync {
    my ($op, $id) = @_;
    my $tainted = eval { my $x = $ENV{PATH}; kill 0, $x . ''; 0 } ? 'no' : 'yes';
    my ($home) = $ENV{OvDataDir} =~ /\A(.*)\z/s;    # untainted, as a -T script must
    open(my $fh, '>>', "$home/tmp/switches.txt") or die $!;
    print {$fh} "$op taint=${^TAINT} W=$^W env-tainted=$tainted\n";
    close $fh;
    return 1;
}
1;

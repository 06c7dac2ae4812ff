#!/usr/bin/perl -CSD
# -CSD: UTF-8 on the standard handles and as the default layer of every open.
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/unicode.txt") or die $!;
    print {$fh} "$op unicode=${^UNICODE} \x{2713} caf\x{e9}\n";    # wide characters, encoded by the layer
    close $fh;
    return 1;
}
1;

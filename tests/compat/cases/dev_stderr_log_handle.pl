# A log handle opened on /dev/stderr at load (`open(LOG, '>/dev/stderr')`), written beside
# STDOUT in every Close: the lines arrive whole and in order, nothing overwritten or padded
# (issue 29, 2).
# compat ids: T-1 | T-2 | T-3 | T-4
use strict;
use warnings;

open(LOG, '>/dev/stderr') or die "cannot open /dev/stderr: $!";
select((select(LOG), $| = 1)[0]);
print LOG "log opened\n";

sub OMBackSync {
    my ($op, $id) = @_;
    print LOG "$op ", (defined $id ? $id : '-'), ": start\n";
    print "stdout of $op\n";
    print LOG "$op ", (defined $id ? $id : '-'), ": done, " . ('.' x 40) . "\n";
    return 1;
}
1;

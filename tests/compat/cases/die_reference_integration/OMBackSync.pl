# A merged integration (`ombridge integration add`) that dies with an object of its own
# exception class: the Close's error names the integration and shows the object readably,
# as the standalone script's would be (issue 29, 8). Both runs run the merged file.
# compat ids: V-1 | down-2 | hash-3
# compat integrations: vendor
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/hand.txt") or die $!;
    print {$fh} "hand-written part: $op ", (defined $id ? $id : '-'), "\n";
    close $fh;
    return 1;
}
1;

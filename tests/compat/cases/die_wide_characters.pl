# A die message with wide characters reaches the outcome as UTF-8 text.
# compat ids: café | T-2
use strict;
use warnings;
use utf8;

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    die "ticket système refusé ✓ for $id\n" if $id ne 'T-2';
    return 1;
}
1;

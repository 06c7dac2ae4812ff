# $SIG{__DIE__} sees the script's own dies, and nothing of the host's.
# compat ids: T-1 | boom | T-3 | nested
use strict;
use warnings;

sub trace { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/dies.txt") or die $!; print {$fh} "@_"; close $fh }
$SIG{__DIE__} = sub { trace("__DIE__ saw: ", (ref $_[0] ? ref $_[0] : $_[0])) };

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    die "ticket $id refused\n" if $id eq 'boom';
    if ($id eq 'nested') {
        eval { die "caught inside the script\n" };
        trace("script caught: $@");
    }
    return 1;
}
1;

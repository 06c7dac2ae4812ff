# A script that closes every inherited descriptor before it runs a ticket program, as daemons
# and careful CLIs do: the idiom must not touch the bridge's protocol (it is far above 63).
use strict;
use warnings;
use POSIX ();

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    POSIX::close($_) for 3 .. 63;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/tickets.txt") or die $!;
    print {$fh} "closing $id\n";
    close $fh;
    system('sh', '-c', 'echo "ticket program ran for $1" >> "$OvDataDir/tmp/tickets.txt"', 'sh', $id) == 0
        or die "ticket program failed: $?";
    return 1;
}
1;

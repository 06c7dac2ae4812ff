# Globals set by Init and counters survive from call to call.
use strict;
use warnings;

our ($session, $calls);
sub OMBackSync {
    my ($op, $id) = @_;
    $calls++;
    $session = "session-" . ($calls) if $op eq 'Init';
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/state.txt") or die $!;
    print {$fh} "$op ", (defined $id ? $id : '-'), " $session call $calls\n";
    close $fh;
    return 1;
}
1;

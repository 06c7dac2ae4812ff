# A cleanup handler for SIGTERM and an END block: on a stop, the handler runs, then END.
use strict;
use warnings;

sub trace { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/trace.txt") or die $!; print {$fh} "@_\n"; close $fh }
my @pending;
$SIG{TERM} = sub { trace("TERM handler: flushing " . scalar(@pending) . " pending") ; @pending = () };
END { trace("END block: " . scalar(@pending) . " pending") }

sub OMBackSync {
    my ($op, $id) = @_;
    push @pending, $id if $op eq 'Close';
    trace("$op" . (defined $id ? " $id" : ''));
    return 1;
}
1;

# `exec` in a Close hands the ticket to a program that replaces perl. Under plain perl the
# program runs to its end and nothing else is closed; ombridge cannot let a program replace its
# host: the program runs to its end all the same (once), the Close fails with one recorded
# reason and is not retried, and the host starts again (docs/compatibility.md; issue 29, 5).
# compat ids: T-1 | exec-2
# compat retries: 2
# compat differs: Close exec-2 => ERR OMBackSync called exec
use strict;
use warnings;

sub trace { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/trace.txt") or die $!; print {$fh} "@_\n"; close $fh }

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    trace("Close $id");
    if ($id =~ /^exec/) {
        print "handing $id to the ticket tool\n";
        exec('sh', '-c', 'sleep 2; echo "closed $1" >> "$OvDataDir/tmp/ticket-tool.txt"; echo "ticket tool: closed $1"',
             'ticket-tool', $id);
        die "cannot run the ticket tool: $!";
    }
    return 1;
}
1;

# A forked child that dies: it ends as a plain perl program ends (message, exit status 255 or
# errno); it never comes back to close anything. END blocks run in the child too.
# compat unordered: tmp/trace.txt
use strict;
use warnings;

sub trace { open(my $fh, '>>', "$ENV{OvDataDir}/tmp/trace.txt") or die $!; print {$fh} "@_\n"; close $fh }
my $parent = $$;
END { trace($$ == $parent ? "END in the parent" : "END in a child") }

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    my $pid = fork;
    die "cannot fork: $!" unless defined $pid;
    if (!$pid) {
        trace("child working on $id");
        $! = 0;
        die "child gave up on $id\n";
    }
    waitpid($pid, 0);
    trace("child of $id ended with " . ($? >> 8));
    return 1;
}
1;

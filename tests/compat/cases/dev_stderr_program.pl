# A program that reports with `>/dev/stderr` (sh reopens the descriptor by its name): what the
# Close printed before and after it stays in the stream and in the Close's output (issue 29, 1).
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    print "closing $id\n";
    warn "ticket tool: looking up $id\n";
    system('sh', '-c', "echo 'ticket tool: error for $id' >/dev/stderr") == 0 or die "sh: $?";
    system('sh', '-c', "echo 'ticket tool: details for $id' >/dev/stdout") == 0 or die "sh: $?";
    print "closed $id\n";
    return 1;
}
1;

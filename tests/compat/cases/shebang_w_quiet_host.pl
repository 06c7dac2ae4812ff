#!/usr/bin/perl -W
# Warnings on for everything (-W even overrides `no warnings`): the script's own warnings reach
# its STDERR, and not one of the host's, at load, in calls, on a die with a reference, with
# STDOUT buffered, in a forked child, or at the stop (issue 29, 6).
# compat ids: T-1 | ref | fork
use strict;

my %seen;
print "loading, STDOUT buffered: ", ($| ? 'no' : 'yes'), "\n";
END { print "END block\n" }

sub OMBackSync {
    my ($op, $id) = @_;
    my $x = "value: " . $seen{missing};    # Use of uninitialized value
    print "$op ", (defined $id ? $id : '-'), "\n";
    die { code => 500, id => $id } if defined $id && $id eq 'ref';
    if (defined $id && $id eq 'fork') {
        my $pid = fork;
        die "cannot fork: $!" unless defined $pid;
        if (!$pid) { print "child of $id\n"; exit 0 }
        waitpid($pid, 0);
    }
    return 1;
}
1;

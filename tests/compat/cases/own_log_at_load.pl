# The script sends STDOUT and STDERR to its own log file at load, as many did under the
# connector: everything it prints goes there, its TERM handler's and END block's lines too,
# and nothing to the service's streams (issue 29, 3).
use strict;
use warnings;

my $log = "$ENV{OvDataDir}/tmp/own.log";
open(STDOUT, '>>', $log) or die "cannot open $log: $!";
open(STDERR, '>&', \*STDOUT) or die "cannot dup STDOUT: $!";
print "loaded\n";

$SIG{TERM} = sub { print "TERM handler: flushing\n"; warn "TERM handler warns\n" };
END { print "END block\n"; warn "END block warns\n" }

sub OMBackSync {
    my ($op, $id) = @_;
    print "$op ", (defined $id ? $id : '-'), "\n";
    warn "warning in $op\n";
    system('echo', "a program run by $op") == 0 or die "echo: $?";
    return 1;
}
1;

# The script sends STDOUT into a pipe of its own at load (a log program), STDERR stays the
# service's: the TERM handler's and END block's prints go into that pipe too, their warnings to
# STDERR, as under plain perl (issue 29, 3).
use strict;
use warnings;

my $log = "$ENV{OvDataDir}/tmp/piped.log";
open(STDOUT, '|-', 'sh', '-c', 'while IFS= read -r line; do echo "logger: $line"; done >> "$1"', 'logger', $log)
    or die "cannot start the logger: $!";

$SIG{TERM} = sub { print "TERM handler ran\n"; warn "TERM handler warns\n" };
END { print "END block ran\n"; warn "END block warns\n" }

sub OMBackSync {
    my ($op, $id) = @_;
    print "$op ", (defined $id ? $id : '-'), "\n";
    warn "$op warns\n";
    return 1;
}
1;

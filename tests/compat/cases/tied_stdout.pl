# STDOUT and STDERR tied to a class without OPEN or CLOSE (as CPAN's Tie::STDERR is): prints
# and warnings reach the class, and on a stop the TERM handler and END block run and print
# through it, with no error of the host's (issue 29, 4).
use strict;
use warnings;

package Tee;
sub TIEHANDLE { my ($class, $file) = @_; return bless { file => $file }, $class }
sub PRINT {
    my $self = shift;
    open(my $fh, '>>', $self->{file}) or die "cannot open $self->{file}: $!";
    print {$fh} @_;
    close $fh;
    return 1;
}
sub PRINTF { my $self = shift; my $format = shift; return $self->PRINT(sprintf($format, @_)) }

package main;

tie *STDOUT, 'Tee', "$ENV{OvDataDir}/tmp/stdout.txt";
tie *STDERR, 'Tee', "$ENV{OvDataDir}/tmp/stderr.txt";
$SIG{__DIE__} = sub { print STDERR "mail to the team: $_[0]" };
$SIG{TERM} = sub { print "TERM handler ran\n" };
END { print "END block ran\n" }

sub OMBackSync {
    my ($op, $id) = @_;
    print "$op ", (defined $id ? $id : '-'), "\n";
    printf "%s done\n", $op;
    warn "careful with $op\n";
    return 1;
}
1;

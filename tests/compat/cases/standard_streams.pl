# What the script's standard streams are: STDOUT and STDERR one pipe (as a service manager gives
# them), STDOUT buffered by perl ($| is 0), STDERR not, STDIN at its end; programs it runs get the
# same (issue 29: the capture file made them a plain file, `-f STDOUT`).
use strict;
use warnings;

sub facts {
    my @st1 = stat STDOUT;
    my @st2 = stat STDERR;
    return join(', ', '-p STDOUT ' . (-p STDOUT ? 1 : 0), '-f STDOUT ' . (-f STDOUT ? 1 : 0),
                '-t STDOUT ' . (-t STDOUT ? 1 : 0), 'one pipe ' . ("$st1[0]:$st1[1]" eq "$st2[0]:$st2[1]" ? 1 : 0),
                "\$| $|", 'fileno ' . fileno(STDOUT) . '/' . fileno(STDERR), '-p STDIN ' . (-p STDIN ? 1 : 0));
}

sub OMBackSync {
    my ($op, $id) = @_;
    my $program = `sh -c '[ -p /dev/stdout ] && echo pipe; [ -p /dev/stderr ] && echo pipe; [ -t 0 ] || echo not-a-terminal'`;
    $program =~ s/\n/ /g;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/streams.txt") or die $!;
    print {$fh} "$op: ", facts(), "; a program sees: $program\n";
    close $fh;
    return 1;
}
1;

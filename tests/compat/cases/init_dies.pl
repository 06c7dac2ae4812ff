# Init dies (the ticket system is unreachable): the message is perl's, and no Close runs.
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    die "cannot reach the ticket system at https://tickets.invalid\n" if $op eq 'Init';
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/closed.txt") or die $!;
    print {$fh} "$id\n";
    close $fh;
    return 1;
}
1;

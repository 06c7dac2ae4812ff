# A CLI called through backticks and system: output, exit status and $? as in plain perl.
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    my $out = `printf 'ticket %s closed' '$id'`;
    my $status = system('sh', '-c', 'exit 3');
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/cli.txt") or die $!;
    print {$fh} "$out; system gave ", $status >> 8, ", \$? is ", $? >> 8, "\n";
    close $fh;
    return 1;
}
1;

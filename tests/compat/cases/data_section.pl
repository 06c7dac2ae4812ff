# A script that keeps its settings after __DATA__ reads them in Init.
use strict;
use warnings;

my %settings;
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') {
        while (my $line = <DATA>) { chomp $line; my ($k, $v) = split /=/, $line, 2; $settings{$k} = $v }
    }
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/data.txt") or die $!;
    print {$fh} "$op: ", join(',', map { "$_=$settings{$_}" } sort keys %settings), "\n";
    close $fh;
    return 1;
}
1;
__DATA__
queue=ops
priority=3

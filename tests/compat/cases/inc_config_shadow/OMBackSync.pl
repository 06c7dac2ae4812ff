# perl's own @INC first, the script's folder after it: `use Config` is perl's.
use strict;
use warnings;
use Config;

my $last = $INC[-1];
sub OMBackSync {
    my ($op, $id) = @_;
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/inc.txt") or die $!;
    print {$fh} "$op: Config from ", ($INC{'Config.pm'} =~ m{/conf/backsync/} ? 'the script folder' : 'perl'),
        ", team_setting=", (defined $Config{team_setting} ? 'set' : 'unset'),
        ", last of \@INC is ", ($last =~ m{/conf/backsync\z} ? 'the script folder' : $last), "\n";
    close $fh;
    return 1;
}
1;

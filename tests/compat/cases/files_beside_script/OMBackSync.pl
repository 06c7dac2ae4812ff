# __FILE__, dirname(__FILE__), $0 and FindBin point at the script: vendor.conf beside it is found.
use strict;
use warnings;
use File::Basename qw(dirname);
use FindBin;

my $conf;
sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') {
        open(my $in, '<', dirname(__FILE__) . '/vendor.conf') or die "no vendor.conf: $!";
        ($conf) = <$in>;
        chomp $conf;
    }
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/paths.txt") or die $!;
    print {$fh} "$op: \$0=$0 __FILE__=", __FILE__, " line=", __LINE__, " FindBin=$FindBin::Bin conf=$conf\n";
    close $fh;
    return 1;
}
1;

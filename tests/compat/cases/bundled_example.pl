# OMBackSync.pl — the example event-synchronisation script bundled with ombridge.
#
# ombridge calls OMBackSync('Init') once when ombacksync starts and OMBackSync('Close', $id)
# for every event that reaches the status closed. This example appends one line per call to
# $OvDataDir/tmp/OMBSOutput.txt: date, time, operation and, for Close, the ID (always last).
# Replace the body with the code that closes the ticket in your third-party system.
#
# Credentials: this file is not encrypted. Keep it readable by its owner only
# (chmod 600); `ombridge check` warns when it is not.
use strict;
use warnings;
use POSIX qw(strftime);

sub OMBackSync {
    my ($operation, $id) = @_;
    my $dir = ($ENV{OvDataDir} || '.') . '/tmp';
    mkdir $dir unless -d $dir;
    my $line = strftime('%Y-%m-%d %H:%M:%S', localtime) . " $operation";
    $line .= " $id" if $operation eq 'Close';
    open(my $fh, '>>', "$dir/OMBSOutput.txt") or die "cannot open $dir/OMBSOutput.txt: $!\n";
    print {$fh} "$line\n";
    close($fh) or die "cannot write $dir/OMBSOutput.txt: $!\n";
    return 1;
}

1;

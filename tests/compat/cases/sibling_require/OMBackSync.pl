# Helpers beside the script load as they did: require "helper.pl" and use TicketClient.
use strict;
use warnings;
use TicketClient;
require "helper.pl";

my $client = TicketClient->new;
sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/helpers.txt") or die $!;
    print {$fh} helper_format($client->close_ticket($id)), "\n";
    close $fh;
    return 1;
}
1;

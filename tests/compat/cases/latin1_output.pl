# Latin-1 output (a script written in ISO-8859-1, as many European ones are): the log and the
# Close's output show the same readable text (issue 29, 7).
# compat ids: T-1 | T-2
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    print "Störung bei $id behoben, Ticket geschlossen (Übergabe an Schicht 2)\n";
    warn "Hinweis: Schließung von $id ohne Rückmeldung\n";
    print "UTF-8 too: cafÃ© âœ“\n";
    return 1;
}
1;

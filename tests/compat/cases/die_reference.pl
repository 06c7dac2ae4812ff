# die with a reference: the error is recorded readably, the same way for both.
# compat ids: T-1 | hash | array | object
use strict;
use warnings;

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    die { code => 500, id => $id, reason => "ticket locked\n" } if $id eq 'hash';
    die [ 'refused', $id ] if $id eq 'array';
    die bless({ status => 409 }, 'Ticket::Error') if $id eq 'object';
    return 1;
}
1;

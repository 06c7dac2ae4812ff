use strict;
use warnings;

package Vendor::Error;
sub new { my ($class, %args) = @_; return bless {%args}, $class }
sub throw { my $class = shift; die $class->new(@_) }

package main;

sub OMBackSync {
    my ($op, $id) = @_;
    return 1 if $op eq 'Init';
    Vendor::Error->throw(message => "vendor is down for $id", status => 503) if $id =~ /down/;
    die { code => 409, id => $id } if $id =~ /hash/;
    return 1;
}
1;

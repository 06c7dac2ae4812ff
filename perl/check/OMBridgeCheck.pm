# Used only by `perl -c` (bridge/perlenv.py): puts the script's folder at the END of @INC, as the
# perl host does, and removes itself from @INC and %INC so the check sees what the child sees.
#   perl -I<this folder> -MOMBridgeCheck=<hex of the script's folder> -c SCRIPT
package OMBridgeCheck;

sub import {
    my (undef, $hex) = @_;
    my $self = $INC{'OMBridgeCheck.pm'};
    (my $own = $self) =~ s{/[^/]*\z}{};
    @INC = grep { !(defined $_ && !ref $_ && $_ eq $own) } @INC;
    delete $INC{'OMBridgeCheck.pm'};
    my $folder = pack('H*', $hex);
    ($folder) = $folder =~ /\A(.*)\z/s;    # our own argument, not outside input (-T)
    push @INC, length $folder ? $folder : '/';
}

1;

# END blocks and object destructors run when ombacksync stops, with the globals of the run.
use strict;
use warnings;

package Session;
sub new { my ($class, $file) = @_; return bless { file => $file, closed => 0 }, $class }
sub DESTROY {
    my $self = shift;
    open(my $fh, '>>', $self->{file}) or return;
    print {$fh} "session destroyed after $self->{closed} closes\n";
    close $fh;
}

package main;
our $session;
END {
    open(my $fh, '>>', "$ENV{OvDataDir}/tmp/end.txt") or die $!;
    print {$fh} "END: ", ($session ? $session->{closed} : 'no session'), "\n";
    close $fh;
}

sub OMBackSync {
    my ($op, $id) = @_;
    if ($op eq 'Init') { $session = Session->new("$ENV{OvDataDir}/tmp/end.txt"); return 1 }
    $session->{closed}++;
    return 1;
}
1;

#!/usr/bin/perl
# The plain-perl reference of the compatibility suite: runs OMBackSync.pl the way a plain perl
# embedding does (DESIGN.md "Plain perl is the reference"):
#
#   do FILE; OMBackSync('Init'); OMBackSync('Close', $_) for the IDs
#
# with $0 = the script, @ARGV empty, the script's folder after perl's @INC, and each call in
# eval so that one failing Close does not keep the others from running; at the end it is
# stopped as a service is (SIGTERM to the script's handler, if any, then a normal end). What a process other
# than this driver does (a child the script forked) is left to perl: if it comes back out of
# the script's code it ends as a plain perl program ends (an uncaught die, or the end).
#
#   perl [the script's #! switches] reference.pl [--marks] OUTCOMES SCRIPT ID...
#
# Writes one line per call to OUTCOMES: "Init OK", "Close <hex id> ERR <message>". Loads no
# module of its own (Data::Dumper only to write a die with a reference, as the host does).
# After loading and after each call it flushes STDOUT, as ombridge does (a deliberate
# difference: docs/compatibility.md), so that what a call printed is in the stream when it ends.
# With --marks it then writes "\0compat: end of call\0" on a private copy of the STDOUT it was
# started with (close-on-exec, far above the descriptors scripts close), so that the suite can
# tell which call printed what, wherever the script sends its own STDOUT.
my $marks = @ARGV && $ARGV[0] eq '--marks' ? shift @ARGV : undef;
my ($outcomes, $script, @ids) = map { /\A(.*)\z/s; $1 } @ARGV;    # ours, not outside input (-T)
my $DRIVER = $$;
my $MARKS;
if ($marks) {
    for my $lowest (4000, 1000, 250) {    # the first the descriptor limit allows
        my $fd = fcntl(STDOUT, 1030, $lowest);    # F_DUPFD_CLOEXEC (Fcntl would be a module)
        next unless defined $fd;
        open($MARKS, '>&=', $fd + 0) or die "cannot copy STDOUT: $!\n";
        binmode $MARKS;    # bytes, whatever -C or the script's layers say
        last;
    }
    die "no descriptor for the marks\n" unless $MARKS;
}

sub end_of_call {
    my $was = select(STDOUT);
    unless ($|) { $| = 1; $| = 0 }    # flushes what is buffered, and keeps the script's setting
    select($was);
    syswrite($MARKS, "\0compat: end of call\0") if $MARKS;
}

sub record {
    # Opened for each line: a script may close every descriptor it inherited (3 .. 63, say),
    # and the embedding's own file must not be one of them.
    open(my $record, '>>', $outcomes) or die "cannot write $outcomes: $!\n";
    print {$record} @_;
    close $record;
}
(my $dir = $script) =~ s{/[^/]*\z}{};
$0    = $script;
@ARGV = ();
push @INC, $dir;

sub text_of {
    my ($err) = @_;
    my $text = "$err";
    if (ref $err && $text =~ /\A(?:[\w:]+=)?[A-Z]+\(0x[0-9a-f]+\)\z/) {
        local ($@, $SIG{__DIE__}, $SIG{__WARN__});
        require Data::Dumper;
        $text = Data::Dumper->new([$err])->Indent(0)->Terse(1)->Sortkeys(1)->Useqq(1)->Dump;
    }
    $text =~ s/\s+\z//;
    utf8::encode($text) if utf8::is_utf8($text);
    $text =~ s/([\x00-\x1f\x7f%])/sprintf('%%%02X', ord $1)/ge;
    return $text;
}

sub back_in_child {
    my ($ok, $err) = @_;
    exit 0 if $ok;
    $SIG{__DIE__} = 'DEFAULT';
    die $err;
}

my $loaded = eval { package main; do $script; die $@ if $@; 1 };
my $err = $@;
back_in_child($loaded, $err) if $$ != $DRIVER;
end_of_call();
if (!$loaded) {
    record("Load ERR ", text_of($err), "\n");
    exit 2;
}
for my $call (['Init'], map { ['Close', $_] } @ids) {
    my $ok = eval { main::OMBackSync(@$call); 1 };
    my $err = $@;
    back_in_child($ok, $err) if $$ != $DRIVER;
    end_of_call();
    my $what = $call->[0] eq 'Init' ? 'Init' : 'Close ' . unpack('H*', $call->[1]);
    record($what, ($ok ? " OK" : " ERR " . text_of($err)), "\n");
    last if !$ok && $call->[0] eq 'Init';
}
# Then it is stopped as a service is stopped: SIGTERM (a handler the script installed runs;
# without one the TERM is taken as the request to end normally), then the end of the program:
# END blocks and destructors.
my $handler = $SIG{TERM};
kill 'TERM', $$ if ref $handler || (defined $handler && $handler !~ /\A(?:|DEFAULT|IGNORE)\z/);
exit 0;

#!/usr/bin/perl
# ombridge perl host: runs an unchanged OMBackSync.pl in one persistent perl.
#
# Core perl only, perl >= 5.10. The host loads no module at all (not even strict or warnings):
# whatever it loaded, the script could use without loading it itself, and would break when it
# goes back to a plain perl (docs/compatibility.md). Data::Dumper is required lazily, only to
# record a `die` with a reference.
#
# Invocation
#   perl [the script's #! switches] ombridge_host.pl REPLY_FD SCRIPT
#   SCRIPT is an absolute path. The script sees @ARGV empty, $0 = SCRIPT, and perl's own @INC
#   followed by the script's folder.
#
# Line protocol (also in docs/protocol.md). One line each way, "\n"-terminated.
#   bridge -> host, on STDIN:
#     Init                 call OMBackSync('Init')
#     Close <ID>           call OMBackSync('Close', ID)
#   host -> bridge, on file descriptor REPLY_FD (never on STDOUT):
#     READY <perl version> once, after SCRIPT was loaded and OMBackSync is defined
#     FATAL <message>      once, instead of READY, when SCRIPT cannot be loaded; the host exits 2
#     OUT <output>         the last 4096 bytes the call printed (optional, before its OK/ERR)
#     OK                   the call returned
#     ERR <message>        the call died, called exit, or the request was malformed
#   Escaping: in <ID> and <message>, '%' and every byte below 0x20 or equal to 0x7F is written
#   as %XX (two hex digits). Nothing else is escaped, so UTF-8 and any other byte passes as is;
#   the ID handed to OMBackSync is the byte string the bridge was given.
#
# Descriptors: at start-up the host moves both ends of the protocol (its STDIN and REPLY_FD)
# to close-on-exec descriptors far above the ranges scripts close before they run a program
# (4094 and 4095 when the descriptor limit allows, else 1022/1023, else 254/255), and after
# every call it checks that they are still the same pipes. A call that closed or replaced them
# fails with "ERR OMBackSync closed or replaced the ombridge host's protocol descriptors ..."
# when the reply descriptor survived; either way the host then exits with status 4 (it can no
# longer read requests) and the bridge starts a new one. The same check after loading the
# script gives "FATAL the script, while it loaded, closed or replaced ...", or the exit alone.
#
# Output: the bridge starts the host with STDOUT on its log pipe and STDERR on an anonymous
# file it opened for reading and appending (the capture file). The host keeps a private copy of
# the log pipe and points the script's STDOUT and STDERR at the capture file, so that what a
# call prints or warns, and what the programs it runs write, land there. After each call the
# host forwards what the file holds to the log pipe, empties the file, and sends the last 4096
# bytes of it as "OUT <escaped bytes>" just before that call's OK or ERR (no OUT line when the
# call wrote nothing): the bridge keeps that tail with the Close's attempt, whatever its log
# budget drops. A host that dies or is killed in the middle of a call leaves that call's output
# in the file, where the bridge reads it. Output of background processes between calls is
# forwarded once a second while idle (and is part of the next call's tail if it comes during
# it). When STDERR is not a plain file (the host run by hand) output goes where STDOUT and
# STDERR point, and no OUT line is sent. The script's STDIN is /dev/null. When its STDIN closes the host stops like a plain perl being stopped: the
# script's $SIG{TERM} handler runs (if it set one), then its END blocks. It also exits when its
# parent process goes away.
#
# exit() inside the script, in the host process itself, is trapped: it becomes an ERR reply and
# the host, with the script's globals, lives on (the lesson of Nagios' embedded perl). In any
# other process (a child the script forked) exit and die behave exactly as in plain perl, and
# such a process never reads a request nor writes a reply.

BEGIN {
    $OMBridge::Host::PID  = $$;    # the host process; every other pid is a child of the script
    $OMBridge::Host::TRAP = 0;     # 1 while the script's code runs on behalf of a request
    # Must be in place before the user's script is compiled: calls compiled afterwards use them.
    *CORE::GLOBAL::exit = sub (;$) {
        my $code = @_ ? $_[0] : 0;
        CORE::exit($code) if $$ != $OMBridge::Host::PID || !$OMBridge::Host::TRAP;
        local $SIG{__DIE__};    # exit is no die: the script's own handler must not see it
        die bless({ code => $code }, 'OMBridge::Exit');
    };
    *CORE::GLOBAL::fork = sub () {
        my $pid = CORE::fork();
        OMBridge::Host::forked() if defined $pid && !$pid;
        return $pid;
    };
}

package OMBridge::Host;

sub EINTR ()  { 4 }     # Linux values: %! would load Errno, `use constant` constant.pm
sub EAGAIN () { 11 }
sub F_DUPFD_CLOEXEC () { 1030 }    # Fcntl would be a module
sub BROKEN () { 4 }     # exit status: the script closed or replaced a protocol descriptor

sub TAIL () { 4096 }    # bytes of a call's output sent back with its reply

our ($IN, $OUT, $PARENT, @CHANNEL);
our ($LOG, $CAPTURE);    # the log pipe, and the capture file STDOUT and STDERR point at

sub high_copy {
    # A close-on-exec duplicate of $fh on the highest descriptor the limit allows among a few
    # (4094 and up, else 1022, else 254): idioms close 3 .. 63, 3 .. 255 or 3 .. 1023.
    # (Below a limit of 255 descriptors, any free one.)
    my ($fh, $mode) = @_;
    for my $lowest (4094, 1022, 254, 3) {
        my $fd = fcntl($fh, F_DUPFD_CLOEXEC, $lowest);    # EINVAL when the limit is lower
        next unless defined $fd;
        open(my $copy, "$mode&=", $fd + 0) or return undef;
        return $copy;
    }
    return undef;
}

sub identity {
    # What a descriptor is (device and inode of its pipe): a script that closed ours and then
    # opened a file of its own would otherwise get our replies on the same number.
    my ($fh) = @_;
    my @st = stat $fh;
    return @st ? "$st[0]:$st[1]" : '';
}

sub channel_intact {
    my @now = (identity($IN), identity($OUT));
    return $now[0] eq $CHANNEL[0] && $now[1] eq $CHANNEL[1] && $now[0] ne '';
}

sub channel_broken {
    # The call that just ran (or the script's top level, with $token FATAL) closed or replaced
    # the host's own descriptors: the host can no longer read requests, and must not write
    # replies into whatever file took their numbers. The call fails with this sentence when the
    # reply descriptor survived; otherwise the host's exit status (BROKEN) is the bridge's only
    # news, and the sentence is in the log. Either way the call counts as attempted: the bridge
    # does not run it again as unrun.
    my ($who, $token) = @_;
    my $what = sprintf('%s closed or replaced the ombridge host\'s protocol descriptors (%d and %d);'
                       . ' the host restarts', $who, fileno($IN), fileno($OUT));
    print STDERR "ombridge host: $what\n";
    syswrite($OUT, "$token " . escape($what) . "\n") if identity($OUT) eq $CHANNEL[1];
    CORE::exit(BROKEN);
}

sub forked {
    # A child of the script has no business with the protocol: drop its copies at once, so that
    # it can neither read a request nor reply, and the bridge sees EOF when the host dies.
    close $IN  if $IN;
    close $OUT if $OUT;
    $IN = $OUT = undef;
    # Its output keeps going to the capture file, which the host forwards to the log.
    close $LOG     if $LOG;
    close $CAPTURE if $CAPTURE;
    $LOG = $CAPTURE = undef;
}

sub capture_output {
    # STDERR is the capture file (the bridge opened it for reading and appending): keep a
    # private copy of the log pipe (STDOUT) and of the file, and point STDOUT at the file too.
    return unless -f STDERR;
    $LOG     = high_copy(\*STDOUT, '>') or die "cannot move STDOUT: $!\n";
    $CAPTURE = high_copy(\*STDERR, '<') or die "cannot copy STDERR: $!\n";
    open(STDOUT, '>&', \*STDERR) or die "cannot point STDOUT at the capture file: $!\n";
    binmode $LOG;
    binmode $CAPTURE;
}

sub take_output {
    # Forward what the capture file holds to the log, empty it, and return its last TAIL bytes.
    # One fstat when nothing was written. Processes the script left running write with
    # O_APPEND, so after the truncation they write at the start again; the file is read until
    # its size stands still, so only a write in the instant between that look and the
    # truncation can be missed.
    return '' unless $CAPTURE;
    flush_std();
    my ($pos, $tail, $size) = (0, '');
    while (($size = -s $CAPTURE || 0) > $pos) {
        sysseek($CAPTURE, $pos, 0);
        while ($pos < $size) {
            my $n = sysread($CAPTURE, my $chunk, 1 << 20);
            last unless $n;
            $pos += $n;
            write_all($LOG, $chunk);
            $tail .= $chunk;
            substr($tail, 0, length($tail) - TAIL, '') if length $tail > TAIL;
        }
    }
    truncate($CAPTURE, 0) if $pos;
    return $tail;
}

sub flush_std {
    # What the script left in STDOUT's buffer when it turned autoflush off: setting $| flushes
    # at once, and the script's setting is put back. (STDERR is never buffered in perl.)
    my $was = select(STDOUT);
    ($| = 1) && ($| = 0) unless $|;
    select($was);
}

sub release_output {
    # Stopping: what is left goes to the log, and so does whatever the TERM handler and the END
    # blocks print from now on (the capture file dies with the host).
    return unless $CAPTURE;
    take_output();
    open(STDOUT, '>&', $LOG);
    open(STDERR, '>&', $LOG);
    $CAPTURE = undef;
}

sub escape {
    my ($s) = @_;
    utf8::encode($s) if utf8::is_utf8($s);    # a message with wide characters goes out as UTF-8
    $s =~ s/([\x00-\x1f\x7f%])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub unescape {
    my ($s) = @_;
    $s =~ s/%([0-9A-Fa-f]{2})/chr(hex $1)/ge;
    return $s;
}

sub reply {
    my ($line) = @_;
    # One syswrite per reply: the bridge sees each outcome as soon as it exists, so a call that
    # hangs later in a pipelined batch is never blamed on an earlier one.
    write_all($OUT, "$line\n");
}

sub write_all {
    my ($fh, $buf) = @_;
    while (length $buf) {
        my $n = syswrite($fh, $buf);
        if (!defined $n) {
            next if $! == EINTR;
            CORE::exit(3);    # the bridge is gone
        }
        substr($buf, 0, $n, '');
    }
}

sub dump_line {
    my ($ref) = @_;
    local ($@, $!, $SIG{__DIE__}, $SIG{__WARN__});
    my $text = eval {
        require Data::Dumper;
        # Useqq: newlines as \n, so the dump stays on one line
        Data::Dumper->new([$ref])->Indent(0)->Terse(1)->Sortkeys(1)->Useqq(1)->Dump;
    };
    return defined $text ? $text : "$ref";
}

sub message_of {
    my ($err) = @_;
    if (ref $err eq 'OMBridge::Exit') {
        my $code = defined $err->{code} ? $err->{code} : 0;
        return "OMBackSync called exit($code)";
    }
    my $text = defined $err ? "$err" : '';
    # die {code => 500}: perl would say HASH(0x...); record what was thrown, on one line.
    # (An object that stringifies itself keeps its own text.)
    $text = dump_line($err) if ref $err && $text =~ /\A(?:[\w:]+=)?[A-Z]+\(0x[0-9a-f]+\)\z/;
    $text =~ s/\s+\z//;
    return length $text ? $text : 'OMBackSync failed without a message';
}

sub leave_child {
    my ($ok, $err) = @_;
    # A child the script forked came back out of the script's code into the host. It ends as
    # a plain perl program would: an uncaught die (message on STDERR, END blocks, perl's exit
    # status), or the end of the program.
    CORE::exit(0) if $ok;
    $SIG{__DIE__} = 'DEFAULT';    # the script's handler saw this die already, where it happened
    die $err;
}

sub load_script {
    my ($script) = @_;
    return "cannot read $script: " . ($! || 'not readable') unless -f $script && -r _;
    my $ok;
    {
        local $TRAP = 1;
        $ok = eval {
            package main;    # do FILE compiles the script in the package it is called from
            do $script;
            die $@ if $@;
            1;
        };
    }
    my $err = $@;
    leave_child($ok, $err) if $$ != $PID;
    # exit(0) while the script's top level runs ends loading, as it would end a plain perl run;
    # what it defined before that is served.
    return message_of($err) unless $ok || (ref $err eq 'OMBridge::Exit' && !$err->{code});
    return "OMBackSync is not defined in $script (the script must define sub OMBackSync)"
        unless defined &main::OMBackSync;
    return undef;
}

sub call {
    # What the call printed is in the log, and its tail in the reply, before the reply.
    my $ok;
    {
        local $TRAP = 1;
        $ok = eval { main::OMBackSync(@_); 1 };
    }
    my $err = $@;
    leave_child($ok, $err) if $$ != $PID;
    channel_broken('OMBackSync', 'ERR') unless channel_intact();
    my $output = take_output();
    my $outcome = $ok ? 'OK' : 'ERR ' . escape(message_of($err));
    return length $output ? 'OUT ' . escape($output) . "\n$outcome" : $outcome;
}

sub handle {
    my ($line) = @_;
    if (substr($line, 0, 6) eq 'Close ' && length $line > 6) {
        my $id = substr($line, 6);
        $id = unescape($id) if index($id, '%') >= 0;
        # An ID from the bridge is no outside input to the script (a plain perl embedding hands
        # it over untainted), so taint mode does not mark it.
        ($id) = $id =~ /\A(.*)\z/s if ${^TAINT};
        return call('Close', $id);
    }
    return call('Init') if $line eq 'Init';
    return 'ERR ' . escape('Close needs an ID') if $line =~ /\AClose ?\z/;
    return 'ERR ' . escape("unknown request: $line");
}

sub serve {
    my $buf = '';
    my $rin = '';
    vec($rin, fileno($IN), 1) = 1;
    while (1) {
        while ((my $nl = index($buf, "\n")) >= 0) {
            my $line = substr($buf, 0, $nl + 1, '');
            chop $line;
            reply(handle($line));
        }
        if (select(my $rout = $rin, undef, undef, 1) <= 0) {    # idle (or a signal came)
            return if getppid() != $PARENT;    # orphaned: never outlive the supervisor
            take_output();    # what processes the script left running wrote, into the log
            next;
        }
        my $n = sysread($IN, $buf, 65536, length $buf);
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            return;
        }
        return if $n == 0;    # the bridge closed our STDIN: stop
    }
}

sub stop {
    # Stopped like a plain perl that a service manager stops: the script's TERM handler (if it
    # installed one) runs, then perl ends normally, END blocks and destructors included.
    release_output();
    my $handler = $SIG{TERM};
    kill 'TERM', $$ if ref $handler || (defined $handler && $handler ne '' && $handler ne 'DEFAULT'
                                        && $handler ne 'IGNORE');
    CORE::exit(0);
}

sub main {
    my ($fd, $script) = @ARGV;
    die "usage: $0 REPLY_FD SCRIPT\n"
        unless defined $script && defined $fd && $fd =~ /\A(\d+)\z/ && $script =~ m{\A(/.*)\z}s;
    ($fd, $script) = ($fd =~ /\A(\d+)\z/, $script =~ /\A(.*)\z/s);    # ours, not outside input (-T)
    # Private, close-on-exec copies of the protocol descriptors, far above the descriptors a
    # script closes before it runs a program (POSIX::close($_) for 3 .. 63): programs the
    # script starts inherit neither, and the script's own STDIN reads nothing.
    open(my $reply, '>&=', $fd) or die "cannot open reply descriptor $fd: $!\n";
    $OUT = high_copy($reply, '>') or die "cannot move reply descriptor $fd: $!\n";
    close $reply;    # the original, not close-on-exec
    $IN = high_copy(\*STDIN, '<') or die "cannot move STDIN: $!\n";
    open(STDIN, '<', '/dev/null') or die "cannot reopen STDIN: $!\n";
    binmode $IN;
    binmode $OUT;
    @CHANNEL = (identity($IN), identity($OUT));
    capture_output();
    select((select(STDERR), $| = 1)[0]);
    $| = 1;    # STDOUT
    $PARENT = getppid();
    # As if perl ran the script itself: $0 is its path, @ARGV is empty, and its folder comes
    # after perl's own @INC (a sibling Config.pm must not shadow perl's Config).
    (my $dir = $script) =~ s{/[^/]*\z}{};
    $0    = $script;
    @ARGV = ();
    push @INC, length $dir ? $dir : '/';
    my $failure = load_script($script);
    channel_broken('the script, while it loaded,', 'FATAL') unless channel_intact();
    take_output();    # what loading printed: into the log
    if (defined $failure) {
        reply('FATAL ' . escape($failure));
        CORE::exit(2);
    }
    reply(sprintf('READY %vd', $^V));
    serve();
    stop();
}

main();

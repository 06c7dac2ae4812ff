#!/usr/bin/perl
# ombridge perl host: runs an unchanged OMBackSync.pl in one persistent perl.
#
# Core perl only, perl >= 5.10. The host loads no module at all (not even strict or warnings):
# whatever it loaded, the script could use without loading it itself, and would break when it
# goes back to a plain perl (docs/compatibility.md). Data::Dumper is required lazily, only to
# record a `die` with a reference.
#
# Invocation
#   perl [the script's #! switches] ombridge_host.pl REPLY_FD SCRIPT [MARK]
#   SCRIPT is an absolute path. The script sees @ARGV empty, $0 = SCRIPT, and perl's own @INC
#   followed by the script's folder. MARK (32 hex digits, new for every host) asks for the
#   end-of-call marks described under Output; without it the host writes none.
#
# Line protocol (also in docs/protocol.md). One line each way, "\n"-terminated.
#   bridge -> host, on STDIN:
#     Init                 call OMBackSync('Init')
#     Close <ID>           call OMBackSync('Close', ID)
#   host -> bridge, on file descriptor REPLY_FD (never on STDOUT):
#     READY <perl version> once, after SCRIPT was loaded and OMBackSync is defined
#     FATAL <message>      once, instead of READY, when SCRIPT cannot be loaded; the host exits 2
#     OK                   the call returned
#     ERR <message>        the call died, called exit, or the request was malformed
#   Escaping: in <ID> and <message>, '%' and every byte below 0x20 or equal to 0x7F is written
#   as %XX (two hex digits). Nothing else is escaped, so UTF-8 and any other byte passes as is;
#   the ID handed to OMBackSync is the byte string the bridge was given.
#
# Descriptors: at start-up the host moves both ends of the protocol (its STDIN and REPLY_FD)
# to close-on-exec descriptors far above the ranges scripts close before they run a program
# (4094 and 4095 when the descriptor limit allows, else 1022/1023, else 254/255), with its own
# copy of the output pipe just below them (4093, 1021, 253), and after every call it checks
# that they are still the same pipes (the copy: that its mark could be written). A call that
# closed or replaced them fails with
# "ERR OMBackSync closed or replaced the ombridge host's protocol descriptors ..." when the
# reply descriptor survived; either way the host then exits with status 4 (it can no longer
# read requests) and the bridge starts a new one. The same check after loading the script gives
# "FATAL the script, while it loaded, closed or replaced ...", or the exit alone.
#
# Output: the bridge starts the host with STDOUT and STDERR on one pipe, which the bridge reads
# into its log. The host never touches the script's STDOUT and STDERR again: whatever the script
# does with them (reopens them on its own file, dups them, ties them, hands them to programs,
# opens /dev/stderr, calls exec) it sees what plain perl gives it, a pipe from a service manager.
# To tell which call printed what, the host keeps a private, close-on-exec copy of the pipe and,
# after loading the script and after each call, flushes STDOUT (what perl buffered for it: plain
# perl would write it when the buffer fills or at the end) and then writes MARK, framed by NUL
# bytes, on that copy, just before its READY/FATAL/OK/ERR line. What the pipe carries between two
# marks is one call's output (its tail stays with the Close's attempt); what the processes the
# script left running write lands in whichever call runs. Neither the bridge nor the host reads
# or empties anything the script writes to: nothing can be lost, moved or overwritten. The
# mark is random per host and never in the environment, so no output forges it by chance. The
# host's own words (a destroyed channel) go to that copy, never to the script's handles. The
# host has no warnings of its own to give (it is clean under -W). The script's STDIN is
# /dev/null. When its STDIN closes the host stops like a plain perl being stopped: the script's
# $SIG{TERM} handler runs (if it set one), then its END blocks. It also exits when its parent
# process goes away.
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
sub EBADF ()  { 9 }
sub ESPIPE () { 29 }
sub F_DUPFD_CLOEXEC () { 1030 }    # Fcntl would be a module
sub BROKEN () { 4 }     # exit status: the script closed or replaced a protocol descriptor
sub REPLIED () { 5 }    # the same, and the call that did it was answered (ERR)
our ($IN, $OUT, $LOG, $PARENT, @CHANNEL);    # requests, replies, the output pipe (for the marks)
our @NUMBERS;    # the descriptor numbers of $IN, $OUT and $LOG, for the message of a destroyed channel
my $MARK;    # "\0<MARK>\0"; a lexical of this file: the script's code cannot see it

sub high_copy {
    # A close-on-exec duplicate of $fh on the highest descriptor the limit allows among a few
    # (the first of @lowest that works: idioms close 3 .. 63, 3 .. 255 or 3 .. 1023), else any.
    my ($fh, $mode, @lowest) = @_;
    for my $lowest (@lowest, 3) {
        my $fd = fcntl($fh, F_DUPFD_CLOEXEC, $lowest);    # EINVAL when the limit is lower
        next unless defined $fd;
        open(my $copy, "$mode&=", $fd + 0) or return undef;
        binmode $copy;    # bytes, whatever -C said
        return $copy;
    }
    return undef;
}

sub identity {
    # What a descriptor is (device and inode of its pipe): a script that closed ours and then
    # opened a file of its own would otherwise get our replies on the same number.
    # (A handle perl itself closed is checked first: stat on it would warn under -w.)
    my ($fh) = @_;
    return '' unless $fh && defined fileno($fh);
    my @st = stat $fh;
    return @st ? "$st[0]:$st[1]" : '';
}

sub channel_intact {
    # After every call: the protocol descriptors are still the very pipes (one fstat each). The
    # copy of the output pipe is not looked at (a system call more for every Close): its mark's
    # write fails if the script closed it (see reply), and a descriptor of the script's lands on
    # its number only while more than 4,000 others are open.
    for my $n (0, 1) {
        my $fh = $n ? $OUT : $IN;
        return 0 unless defined fileno($fh);
        my ($dev, $ino) = stat $fh;
        return 0 unless defined $ino && "$dev:$ino" eq $CHANNEL[$n];
    }
    return 1;
}

sub channel_broken {
    # The call that just ran (or the script's top level, with $token FATAL) closed or replaced
    # the host's own descriptors: the host can no longer read requests, and must not write
    # replies into whatever file took their numbers. The call fails with this sentence when the
    # reply descriptor survived, and the host exits with REPLIED: the requests after it were
    # never read. Otherwise it exits with BROKEN, the bridge's only news (the call in flight is
    # the one that broke it), and the sentence is in the log. Either way the call counts as
    # attempted: the bridge does not run it again as unrun.
    my ($who, $token) = @_;
    my @n = grep { $_ >= 0 } @NUMBERS;
    my $what = "$who closed or replaced the ombridge host's protocol descriptors ("
               . join(', ', @n[0 .. $#n - 1]) . " and $n[-1]); the host restarts";
    flush_stdout();
    say_to_log("ombridge host: $what\n");
    my $replying = identity($OUT) eq $CHANNEL[1];
    syswrite($LOG, $MARK) if $replying && $LOG && identity($LOG) eq $CHANNEL[2];    # the call's output ends
    my $replied = $replying && syswrite($OUT, "$token " . escape($what) . "\n");
    for my $fh ($IN, $OUT, $LOG) {    # closed under perl's feet: closed quietly now, not with a
        close $fh if $fh && identity($fh) eq '';    # warning of perl's at the exit
    }
    CORE::exit($replied ? REPLIED : BROKEN);
}

sub say_to_log {
    # The host's own words go to its copy of the output pipe, or, when the script closed that,
    # to descriptor 2 if that is still the same pipe: never into a file of the script's.
    my ($text) = @_;
    return if $CHANNEL[2] eq '';
    if ($LOG && identity($LOG) eq $CHANNEL[2]) {
        syswrite($LOG, $text);
    } elsif (open(my $err, '>&=', 2)) {    # descriptor 2 itself: a tie on STDERR is the script's
        syswrite($err, $text) if identity($err) eq $CHANNEL[2];
    }
}

sub forked {
    # A child of the script has no business with the protocol: drop its copies at once, so that
    # it can neither read a request nor reply, and the bridge sees EOF when the host dies. Its
    # output goes where its STDOUT and STDERR point, as in plain perl.
    for my $fh ($IN, $OUT, $LOG) {
        close $fh if $fh;
    }
    $IN = $OUT = $LOG = undef;
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
    # What the call printed is flushed, and ended by a mark on the output pipe, before its reply
    # exists (the bridge reads the reply, then finds the mark in the pipe). One syswrite per
    # reply: the bridge sees each outcome as soon as it exists, so a call that hangs later in a
    # pipelined batch is never blamed on an earlier one. (Inline: this runs for every Close.)
    if ($LOG) {
        flush_stdout();
        my $n = syswrite($LOG, $MARK);
        unless ($n && $n == length $MARK) {
            channel_broken($line =~ /\A(?:READY|FATAL)/ ? ('the script, while it loaded,', 'FATAL')
                                                        : ('OMBackSync', 'ERR'))
                if !defined $n && $! == EBADF;    # the script closed our copy of the output pipe
            write_all($LOG, substr($MARK, $n || 0));
        }
    }
    my $n = syswrite($OUT, "$line\n");
    write_all($OUT, substr("$line\n", $n || 0)) unless $n && $n == 1 + length $line;
}

sub flush_stdout {
    # What perl buffered for STDOUT (on a pipe it buffers 8 KiB) goes out now: $| = 1 flushes at
    # once, and the script's setting is put back. STDOUT is nearly always the selected handle:
    # then no select is needed (half the cost of this, which runs for every Close).
    my $was = select() eq 'main::STDOUT' ? undef : select(STDOUT);
    unless ($|) {
        $| = 1;
        $| = 0;
    }
    select($was) if defined $was;
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
    my $ok;
    {
        local $TRAP = 1;
        $ok = eval { main::OMBackSync(@_); 1 };
    }
    my $err = $@;
    leave_child($ok, $err) if $$ != $PID;
    channel_broken('OMBackSync', 'ERR') unless channel_intact();
    return $ok ? 'OK' : 'ERR ' . escape(message_of($err));
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
    # installed one) runs, then perl ends normally, END blocks and destructors included. What
    # they print goes wherever the script's STDOUT and STDERR point (the host never moved them).
    my $handler = $SIG{TERM};
    kill 'TERM', $$ if ref $handler || (defined $handler && $handler ne '' && $handler ne 'DEFAULT'
                                        && $handler ne 'IGNORE');
    CORE::exit(0);
}

sub main {
    my ($fd, $script, $mark) = @ARGV;
    die "usage: $0 REPLY_FD SCRIPT [MARK]\n"
        unless defined $script && defined $fd && $fd =~ /\A(\d+)\z/ && $script =~ m{\A(/.*)\z}s
               && (!defined $mark || $mark =~ /\A[0-9a-f]{32}\z/);
    ($fd, $script) = ($fd =~ /\A(\d+)\z/, $script =~ /\A(.*)\z/s);    # ours, not outside input (-T)
    # Private, close-on-exec copies of the protocol descriptors, far above the descriptors a
    # script closes before it runs a program (POSIX::close($_) for 3 .. 63): programs the
    # script starts inherit neither, and the script's own STDIN reads nothing.
    open(my $reply, '>&=', $fd) or die "cannot open reply descriptor $fd: $!\n";
    $OUT = high_copy($reply, '>', 4094, 1022, 254) or die "cannot move reply descriptor $fd: $!\n";
    close $reply;    # the original, not close-on-exec
    $IN = high_copy(\*STDIN, '<', 4094, 1022, 254) or die "cannot move STDIN: $!\n";
    open(STDIN, '<', '/dev/null') or die "cannot reopen STDIN: $!\n";
    @CHANNEL = (identity($IN), identity($OUT), identity(\*STDOUT));    # the last: the output pipe
    @NUMBERS = (fileno($IN), fileno($OUT), -1);
    if (defined $mark) {
        ($MARK) = "\0$mark\0" =~ /\A(.*)\z/s;
        $LOG = high_copy(\*STDOUT, '>', 4093, 1021, 253) or die "cannot copy STDOUT: $!\n";
        die "MARK needs STDOUT on a pipe\n" if defined sysseek($LOG, 0, 1) || $! != ESPIPE;
        $NUMBERS[2] = fileno($LOG);
    }
    $PARENT = getppid();
    # As if perl ran the script itself: $0 is its path, @ARGV is empty, and its folder comes
    # after perl's own @INC (a sibling Config.pm must not shadow perl's Config).
    (my $dir = $script) =~ s{/[^/]*\z}{};
    $0    = $script;
    @ARGV = ();
    push @INC, length $dir ? $dir : '/';
    my $failure = load_script($script);
    channel_broken('the script, while it loaded,', 'FATAL') unless channel_intact();
    if (defined $failure) {
        reply('FATAL ' . escape($failure));
        CORE::exit(2);
    }
    reply(sprintf('READY %vd', $^V));
    serve();
    stop();
}

main();

#!/usr/bin/perl
# ombridge perl host: runs an unchanged OMBackSync.pl in one persistent perl.
#
# Core modules only; perl >= 5.10.
#
# Invocation
#   perl [-I DIR ...] ombridge_host.pl REPLY_FD SCRIPT
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
# Whatever the script prints (STDOUT) or warns (STDERR) goes to the bridge's log; the script's
# STDIN is /dev/null. The host exits when its STDIN closes or its parent process goes away.
# A call to exit() inside the script is trapped: it becomes an ERR reply and the host, with the
# script's globals, lives on (the lesson of Nagios' embedded perl).
use strict;
use warnings;

BEGIN {
    # Must be in place before the user's script is compiled: calls compiled afterwards use it.
    *CORE::GLOBAL::exit = sub (;$) {
        my $code = @_ ? $_[0] : 0;
        die OMBridge::Exit->new($code);
    };
}

package OMBridge::Exit;

sub new  { my ($class, $code) = @_; return bless { code => $code }, $class }
sub code { return $_[0]{code} }

package OMBridge::Host;

use IO::Handle;
use IO::Select;
use File::Spec;
use POSIX ();

my $PARENT = getppid();

sub escape {
    my ($s) = @_;
    $s =~ s/([\x00-\x1f\x7f%])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub unescape {
    my ($s) = @_;
    $s =~ s/%([0-9A-Fa-f]{2})/chr(hex $1)/ge;
    return $s;
}

sub reply {
    my ($fh, $line) = @_;
    # One syswrite per reply: the bridge sees each outcome as soon as it exists, so a call that
    # hangs later in a pipelined batch is never blamed on an earlier one.
    my $buf = "$line\n";
    while (length $buf) {
        my $n = syswrite($fh, $buf);
        if (!defined $n) {
            next if $!{EINTR};
            CORE::exit(3);    # the bridge is gone
        }
        substr($buf, 0, $n, '');
    }
}

sub message_of {
    my ($err) = @_;
    if (ref $err && eval { $err->isa('OMBridge::Exit') }) {
        my $code = defined $err->code ? $err->code : 0;
        return "OMBackSync called exit($code)";
    }
    $err = defined $err ? "$err" : '';
    $err =~ s/\s+\z//;
    return length $err ? $err : 'OMBackSync failed without a message';
}

sub load_script {
    my ($script) = @_;
    return "cannot read $script: " . ($! || 'not readable') unless -f $script && -r _;
    my $ok = eval {
        package main;    # do FILE compiles the script in the package it is called from
        do $script;
        die $@ if $@;
        1;
    };
    if (!$ok) {
        my $err = $@;
        # exit(0) while the script's top level runs ends loading, as it would end a plain perl run.
        return undef if ref $err && eval { $err->isa('OMBridge::Exit') } && !$err->code;
        return message_of($err);
    }
    return "OMBackSync is not defined in $script (the script must define sub OMBackSync)"
        unless defined &main::OMBackSync;
    return undef;
}

sub call {
    my @args = @_;
    # STDOUT and STDERR autoflush: what the call printed is in the log before its reply.
    return 'OK' if eval { main::OMBackSync(@args); 1 };
    return 'ERR ' . escape(message_of($@));
}

sub handle {
    my ($line) = @_;
    if (substr($line, 0, 6) eq 'Close ' && length $line > 6) {
        my $id = substr($line, 6);
        return call('Close', index($id, '%') < 0 ? $id : unescape($id));
    }
    return call('Init') if $line eq 'Init';
    return 'ERR ' . escape('Close needs an ID') if $line =~ /\AClose ?\z/;
    return 'ERR ' . escape("unknown request: $line");
}

sub serve {
    my ($in, $out) = @_;
    my $select = IO::Select->new($in);
    my $buf = '';
    while (1) {
        while ((my $nl = index($buf, "\n")) >= 0) {
            my $line = substr($buf, 0, $nl + 1, '');
            chop $line;
            reply($out, handle($line));
        }
        if (!$select->can_read(1)) {
            return if getppid() != $PARENT;    # orphaned: never outlive the supervisor
            next;
        }
        my $n = sysread($in, $buf, 65536, length $buf);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return;
        }
        return if $n == 0;    # the bridge closed our STDIN
    }
}

sub main {
    my ($fd, $script) = @ARGV;
    die "usage: $0 REPLY_FD SCRIPT\n" unless defined $script && defined $fd && $fd =~ /\A\d+\z/;
    # Private, close-on-exec copies of the protocol descriptors: programs the script starts
    # inherit neither, and the script's own STDIN reads nothing.
    open(my $out, '>&', $fd) or die "cannot open reply descriptor $fd: $!\n";
    POSIX::close($fd);
    open(my $in, '<&', \*STDIN) or die "cannot duplicate STDIN: $!\n";
    open(STDIN, '<', File::Spec->devnull) or die "cannot reopen STDIN: $!\n";
    binmode $in;
    binmode $out;
    STDOUT->autoflush(1);
    STDERR->autoflush(1);
    my $script_path = File::Spec->rel2abs($script);
    # As if perl ran the script itself: FindBin and dirname($0) find the script's folder.
    $0 = $script_path;
    my $failure = load_script($script_path);
    if (defined $failure) {
        reply($out, 'FATAL ' . escape($failure));
        CORE::exit(2);
    }
    reply($out, sprintf('READY %vd', $^V));
    serve($in, $out);
    CORE::exit(0);
}

main();

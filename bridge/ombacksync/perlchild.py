"""One running perl host process and the two ends of its line protocol (:mod:`bridge.ombacksync.protocol`).

:class:`PerlChild` spawns ``perl [#! switches] perl/ombridge_host.pl <reply fd> <script> <mark>``
in a process group of its own, with the script's STDOUT and STDERR on one pipe that a
:class:`bridge.ombacksync.scriptlog.OutputReader` reads into the log and splits at the host's marks into one
output tail per call (docs/protocol.md, "Output"); it stops or kills the whole group. It is
passive: the caller :meth:`~PerlChild.push` puts request lines in and :meth:`~PerlChild.poll`
takes replies out (pipelined; the host's exit is watched through a pidfd, since a process the
script forked without ``fork()`` may hold the reply pipe open); nothing here decides when.
:class:`bridge.ombacksync.perlhost.PerlHost` owns the one child and every decision about it.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import PerlFault, PerlStartError
from ..home import Home
from ..processes import kill_group
from . import protocol, scriptlog
from .perlenv import HostSettings, host_command, perl_env

_CHUNK = 65536
_COALESCE_ABOVE = 256  # outstanding replies above which the reader naps between reads
_COALESCE_SLEEP = 0.0005

log = logging.getLogger("ombridge.perl")
script_log = logging.getLogger("ombridge.script")  # what the user's script prints or warns


def describe_exit(pid: int, status: int | None) -> str:
    """How the child ended, in words (``status`` as :attr:`subprocess.Popen.returncode`)."""
    if status is None:
        return f"perl child {pid} closed its reply channel"
    return f"perl child {pid} {describe_status(status)}"


def describe_status(status: int) -> str:
    """``exited with status N`` or ``was killed by SIGNAME`` (``status`` as a returncode)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


class PerlChild:
    """One running perl host process and the two ends of its protocol."""

    def __init__(self, settings: HostSettings, host_script: Path, script: Path, home: Home) -> None:
        reply_r, reply_w = os.pipe()
        # New for every host and never in its environment: no output forges a mark by chance.
        mark = secrets.token_hex(16) if settings.output_tails else None
        try:
            self.proc = subprocess.Popen(
                host_command(script, settings, reply_w, host_script, mark),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(reply_w,), start_new_session=True, env=perl_env(home, settings),
                cwd=str(home.root), bufsize=0,
            )
        except OSError as exc:
            os.close(reply_r)
            raise PerlStartError(f"cannot run {settings.perl}: {exc}") from exc
        finally:
            os.close(reply_w)
        self.leftover = ""  # the output tail of the call the host did not finish (see kill)
        self.pid = self.proc.pid
        self._reply = reply_r
        os.set_blocking(reply_r, False)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin = self.proc.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self._buf = bytearray()
        # Readable once the host has exited: a process it forked without fork() (a piped open)
        # may hold the reply pipe open, so its EOF alone would come late.
        self._exited: int | None = _pidfd(self.pid)
        self._output = scriptlog.OutputReader(self.proc.stdout, script_log, f"perl[{self.pid}]",
                                              mark=b"\0" + mark.encode() + b"\0" if mark else None)
        self._exe: str | None = None  # what the host process is once it serves (see replaced_by)
        self._comm: str | None = None
        self._out = bytearray()  # pushed, not written yet
        self._outstanding = 0  # pushed, not answered yet
        self._gone = False  # the host has exited (seen through the pidfd)
        self._writing = False  # the selector watches STDIN for room to write
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._reply, selectors.EVENT_READ)
        if self._exited is not None:
            self._sel.register(self._exited, selectors.EVENT_READ)

    def alive(self) -> bool:
        """True while the process has not exited. It is not reaped here: what /proc says of it
        tells an ``exec`` from a crash (:meth:`replaced_by`)."""
        if self.proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    @property
    def outstanding(self) -> int:
        """Requests pushed and not answered yet."""
        return self._outstanding

    def wait_fds(self) -> list[int]:
        """What :meth:`poll` waits on to read: the reply pipe and the exit."""
        return [self._reply] if self._exited is None else [self._reply, self._exited]

    def push(self, requests: Sequence[bytes]) -> None:
        """Write request lines, as many as the pipe takes now; :meth:`poll` writes the rest."""
        for request in requests:
            self._out += request
        self._outstanding += len(requests)
        self._write()

    def poll(self, timeout: float) -> tuple[list[protocol.Reply], PerlFault | None]:
        """Write what the pipe takes, then return the replies that arrived (in order), waiting
        up to ``timeout`` seconds for the first; and the fault that ended the child, if any
        (its exit with requests unanswered, or a line that is not the protocol)."""
        if self._outstanding > _COALESCE_ABOVE and b"\n" not in self._buf:
            # Many replies still to come: let them pile up in the pipe, so perl writes without
            # waking us for every one (docs/decisions.md, "Reading replies in heaps").
            time.sleep(_COALESCE_SLEEP)
        deadline = time.monotonic() + timeout
        while True:
            self._write()
            lines = self._wait_lines(max(0.0, deadline - time.monotonic()))
            replies, garbage = protocol.parse_replies(lines or [], self.pid)
            if replies:  # each call's output ends with a mark the host wrote before its reply
                tails = self._output.take_calls(len(replies))
                replies = [protocol.Reply(r.ok, r.message, t) if t else r for r, t in zip(replies, tails)]
            self._outstanding -= len(replies)
            if garbage:
                return replies, garbage
            if lines is None or (self._gone and self._outstanding):
                return replies, self._exit_fault()
            if replies or self._gone or time.monotonic() >= deadline:
                return replies, None

    def call(self, requests: Sequence[bytes], timeout: float) -> tuple[list[protocol.Reply], PerlFault | None]:
        """Push ``requests`` and collect one reply each, in order; each has ``timeout`` seconds
        from the previous reply. Returns the replies and the fault that stopped them (None when
        every request was answered). For Init and one-off calls; the backsync lane streams."""
        self.push(requests)
        replies: list[protocol.Reply] = []
        quiet_since = time.monotonic()
        while self._outstanding:
            got, fault = self.poll(max(0.0, quiet_since + timeout - time.monotonic()))
            replies += got
            if fault:
                return replies, fault
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() >= quiet_since + timeout:
                return replies, PerlFault(f"call timed out after {timeout:g}s", self.pid)
        self._remember_identity()  # Init (or the script's top level) may have set $0
        return replies, None

    def _write(self) -> None:
        """Write what the pipe takes now (a child that is gone takes nothing: its exit says why)."""
        while self._out:
            try:
                n = os.write(self._stdin, self._out[:_CHUNK])
            except BlockingIOError:
                return
            except BrokenPipeError:
                self._out.clear()
                return
            del self._out[:n]

    def _wait_lines(self, timeout: float) -> list[bytes] | None:
        """Wait up to ``timeout`` for the reply pipe, the host's exit or room to write; then the
        complete reply lines there are ([] if none yet; None at EOF)."""
        if b"\n" in self._buf or self._gone:
            return self._read_lines(until_empty=self._gone)
        if self._out and not self._writing:
            self._sel.register(self._stdin, selectors.EVENT_WRITE)
        elif self._writing and not self._out:
            self._sel.unregister(self._stdin)
        self._writing = bool(self._out)
        readable = False
        for key, _ in self._sel.select(timeout):
            if key.fd == self._exited:
                self._gone = True  # whatever it wrote is in the pipe now
            readable = readable or key.fd != self._stdin
        return self._read_lines(until_empty=self._gone) if readable else []

    def read_line(self, timeout: float) -> bytes:
        """Read exactly one line (the greeting); raises :class:`PerlFault` on EOF, on the host's
        exit (seen although a piped open at the script's top level holds the pipe) or timeout."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._reply, selectors.EVENT_READ)
            if self._exited is not None:
                sel.register(self._exited, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                remaining = deadline - time.monotonic()
                ready = sel.select(remaining) if remaining > 0 else []
                if not ready:
                    raise PerlFault(f"perl did not load the script within {timeout:g}s", self.pid)
                exited = any(key.fd == self._exited for key, _ in ready)
                at_eof = not self._fill(until_empty=exited)
                if exited or at_eof:  # the host is gone: what it wrote is all there will be
                    if b"\n" in self._buf:  # it greeted, then exited: the next call sees the exit
                        break
                    raise self._exit_fault()
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        self._output.take_calls(1)  # what loading printed is in the log; no attempt keeps it
        self._remember_identity()
        return line

    def _read_lines(self, until_empty: bool = False) -> list[bytes] | None:
        """The complete reply lines there are now ([] if none yet; None at EOF). With ``until_empty``
        (the host has exited), read until the pipe is empty, EOF or not."""
        if not self._fill(until_empty) and not until_empty:
            return None
        if b"\n" not in self._buf:
            return []
        *lines, rest = bytes(self._buf).split(b"\n")
        self._buf = bytearray(rest)
        return lines

    def _fill(self, until_empty: bool) -> bool:
        """Add what the reply pipe holds to the buffer: one read, or with ``until_empty`` every read
        until it is empty. False at EOF."""
        while True:
            try:
                chunk = os.read(self._reply, _CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._buf += chunk
            if not until_empty:
                return True

    def _exit_fault(self) -> PerlFault:
        program = self.replaced_by()
        if program is not None:  # the program runs on as this process: its end is the call's
            return PerlFault(f"OMBackSync called exec: the perl host was replaced by {program}", self.pid,
                             replaced_by=program)
        status = self.wait(1.0)
        return PerlFault(describe_exit(self.pid, status), self.pid, status)

    def wait(self, timeout: float) -> int | None:
        """The process's exit status (a returncode) once it ends within ``timeout``, else None."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def replaced_by(self) -> str | None:
        """The program that took the host's place, when the script called ``exec``; else None.

        Read from /proc before the process is reaped: a live process whose executable is no
        longer the host's perl, or whose name (``comm``: the first 15 bytes of ``$0`` for the
        host, the program's file name after an exec) changed since the host last answered. A
        process that a signal killed crashed (a host that renamed itself and died), it did not
        exec."""
        if self._comm is None or self.proc.returncode is not None:
            return None
        exe, comm = _exe_of(self.pid), _comm_of(self.pid)
        if comm is None:
            return None
        renamed = comm != self._comm  # the program's own name (as the script called it), if so
        if exe is not None:  # still running
            if renamed or exe != self._exe:
                return comm if renamed else os.path.basename(exe.removesuffix(" (deleted)"))
            return None
        return comm if renamed and not _killed_by_signal(self.pid) else None

    def _remember_identity(self) -> None:
        self._exe, self._comm = _exe_of(self.pid), _comm_of(self.pid)

    def kill(self) -> None:
        """Kill the child's whole process group at once and reap it. :attr:`leftover` is then the
        output tail of the call it did not finish."""
        kill_group(self.pid)
        self._reap(5.0)
        if self._exited is not None:
            os.close(self._exited)
            self._exited = None
        # Everything the group wrote is in the pipe now (or was read): what came after the last
        # mark is the unfinished call's. Processes that escaped the group write on into the log.
        self.leftover = self._output.take_leftover()

    def stop(self, grace: float = 10.0) -> None:
        """Stop as a plain perl is stopped, then kill whatever is left after ``grace`` seconds.

        EOF on STDIN: the host runs the script's TERM handler (if it set one) and its END
        blocks, and exits. A host still running at the end of the grace period gets SIGTERM
        (its handler runs once more if it is stuck). Processes the script started (a
        background ``curl``, a forked child) have until the end of the grace period to finish;
        then the whole group is killed.
        """
        deadline = time.monotonic() + grace
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("perl child %d did not end within %gs of its stop; sending SIGTERM", self.pid, grace)
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=min(2.0, grace))
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        while _group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(self.pid):
            log.warning("processes started by the script (group %d) still run %gs after the stop; killing them",
                        self.pid, grace)
        self.kill()

    def _reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            log.error("perl child %d survived SIGKILL", self.pid)
        for f in (self.proc.stdin,):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        self._sel.close()
        try:
            os.close(self._reply)
        except OSError:
            pass
        self._output.join(timeout=1.0)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` exits (None where the kernel has none)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exe_of(pid: int) -> str | None:
    """The executable of a live process (None once it has ended)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _comm_of(pid: int) -> str | None:
    """A process's name (``comm``), also while it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.find(b"(") + 1:stat.rfind(b")")].decode("utf-8", "replace")


def _killed_by_signal(pid: int) -> bool:
    """True when the (exited, not yet reaped) process ``pid`` was killed by a signal."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    except (OSError, AttributeError):
        return False
    return info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies waiting to be reaped do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False

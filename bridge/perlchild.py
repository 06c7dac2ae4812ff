"""One running perl host process and the two ends of its line protocol (:mod:`bridge.protocol`).

:class:`PerlChild` spawns ``perl [#! switches] perl/ombridge_host.pl <reply fd> <script>`` in a
process group of its own, sends requests pipelined and reads one reply each (watching the host's
exit through a pidfd, since a process the script forked without ``fork()`` may hold the reply
pipe open), drains what the script prints into the log, and stops or kills the whole group.
:class:`bridge.perlhost.PerlHost` owns the one child and every decision about it.
"""

from __future__ import annotations

import itertools
import logging
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import drain, protocol
from .errors import PerlFault, PerlStartError, ProtocolError
from .home import Home
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
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"perl child {pid} was killed by {name}"
    return f"perl child {pid} exited with status {status}"


class PerlChild:
    """One running perl host process and the two ends of its protocol."""

    def __init__(self, settings: HostSettings, host_script: Path, script: Path, home: Home) -> None:
        reply_r, reply_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                host_command(script, settings, reply_w, host_script),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(reply_w,), start_new_session=True, env=perl_env(home, settings),
                cwd=str(home.root), bufsize=0,
            )
        except OSError as exc:
            os.close(reply_r)
            raise PerlStartError(f"cannot run {settings.perl}: {exc}") from exc
        finally:
            os.close(reply_w)
        self.pid = self.proc.pid
        self._reply = reply_r
        os.set_blocking(reply_r, False)
        assert self.proc.stdin is not None
        self._stdin = self.proc.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self._buf = bytearray()
        # Readable once the host has exited: a process it forked without fork() (a piped open)
        # may hold the reply pipe open, so its EOF alone would come late.
        self._exited: int | None = _pidfd(self.pid)
        self._pump = drain.start(self.proc.stdout, script_log, f"perl[{self.pid}]")  # type: ignore[arg-type]

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def exchange(self, requests: Sequence[bytes], timeout: float, *, window: int | None = None,
                 on_replies: Callable[[list[protocol.Reply]], Sequence[bytes] | None] | None = None,
                 every: int = 100) -> tuple[list[protocol.Reply], PerlFault | None]:
        """Send ``requests`` pipelined; collect one reply each, in order, until done or a fault.

        Each call has ``timeout`` seconds from the previous reply. Returns the replies received
        and the fault that stopped the exchange (None when every request was answered). With
        ``on_replies``, every ``every`` new replies are handed over as they arrive (the caller
        records them while perl works on), and the requests it returns are sent after the
        others (the caller streams more work in while perl is busy); when it returns None
        instead, the replies are not taken and are offered again, with the next ones. At most
        ``window`` requests are ever sent ahead of the replies handed over: a crash of the
        caller repeats no more than that many.
        """
        ends = list(itertools.accumulate(len(r) for r in requests))  # where each request ends
        payload = bytearray().join(requests)
        sent = 0
        replies: list[protocol.Reply] = []
        handed = 0  # replies given to on_replies so far
        declined = -1  # how many replies there were when on_replies last declined them

        def allowed() -> int:  # bytes that may be sent now
            last = len(ends) if window is None else min(len(ends), handed + window)
            return ends[last - 1] if last else 0

        with selectors.DefaultSelector() as sel:
            sel.register(self._reply, selectors.EVENT_READ)
            if self._exited is not None:
                sel.register(self._exited, selectors.EVENT_READ)
            writing = bool(payload)
            if writing:
                sel.register(self._stdin, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            while len(replies) < len(ends):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return replies, PerlFault(f"call timed out after {timeout:g}s", self.pid)
                for key, _ in sel.select(remaining):
                    if key.fd == self._stdin:
                        limit = allowed()
                        try:
                            sent += os.write(self._stdin, payload[sent:min(limit, sent + _CHUNK)])
                        except BrokenPipeError:
                            sent = limit = len(payload)  # the child is gone; its reply channel says how
                        except BlockingIOError:
                            continue
                        if sent >= limit:
                            sel.unregister(self._stdin)
                            writing = False
                        continue
                    exited = key.fd == self._exited
                    lines = self._read_lines(drain=exited)
                    for line in lines or ():
                        try:
                            replies.append(protocol.parse_reply(line, self.pid))
                        except ProtocolError as exc:
                            return replies, exc
                    if lines is None or (exited and len(replies) < len(ends)):
                        return replies, self._exit_fault()
                    if exited:
                        sel.unregister(self._exited)  # every reply was in the pipe
                    if not lines:
                        continue
                    deadline = time.monotonic() + timeout
                    if on_replies is not None and len(replies) - handed >= every and len(replies) > declined:
                        more = on_replies(replies[handed:])
                        deadline = time.monotonic() + timeout  # (perl is not to blame for the time that took)
                        if more is None:  # not taken now: offered again with the next replies
                            if window is not None and len(replies) - handed >= window:  # none would come
                                raise AssertionError("on_replies must take the replies once perl has answered "
                                                     "all it may run ahead")
                            declined = len(replies)
                            continue
                        handed = len(replies)
                        if more:
                            ends += [len(payload) + n for n in itertools.accumulate(len(r) for r in more)]
                            payload += b"".join(more)
                        if not writing and sent < allowed():
                            sel.register(self._stdin, selectors.EVENT_WRITE)
                            writing = True
                    elif len(ends) - len(replies) > _COALESCE_ABOVE:
                        # Many replies still to come: let them pile up in the pipe, so perl
                        # writes without waking us for every one (bench: 134k -> 165k closes/s).
                        time.sleep(_COALESCE_SLEEP)
        return replies, None

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
                at_eof = not self._fill(drain=exited)
                if exited or at_eof:  # the host is gone: what it wrote is all there will be
                    if b"\n" in self._buf:  # it greeted, then exited: the next call sees the exit
                        break
                    raise self._exit_fault()
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return line

    def _read_lines(self, drain: bool = False) -> list[bytes] | None:
        """The complete reply lines there are now ([] if none yet; None at EOF). With ``drain``
        (the host has exited), read until the pipe is empty, EOF or not."""
        if not self._fill(drain) and not drain:
            return None
        if b"\n" not in self._buf:
            return []
        *lines, rest = bytes(self._buf).split(b"\n")
        self._buf = bytearray(rest)
        return lines

    def _fill(self, drain: bool) -> bool:
        """Add what the reply pipe holds to the buffer: one read, or with ``drain`` every read
        until it is empty. False at EOF."""
        while True:
            try:
                chunk = os.read(self._reply, _CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._buf += chunk
            if not drain:
                return True

    def _exit_fault(self) -> PerlFault:
        try:
            status = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            status = None
        return PerlFault(describe_exit(self.pid, status), self.pid, status)

    def kill(self) -> None:
        """Kill the child's whole process group at once and reap it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reap(5.0)
        if self._exited is not None:
            os.close(self._exited)
            self._exited = None

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
        try:
            os.close(self._reply)
        except OSError:
            pass
        self._pump.join(timeout=1.0)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when process ``pid`` exits (None where the kernel has none)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


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

"""PerlHost: one persistent ``perl`` child running the user's ``OMBackSync.pl``, supervised.

The child is ``perl [#! switches] perl/ombridge_host.pl <reply fd> <script>`` (see
:mod:`bridge.protocol` and :mod:`bridge.perlenv`). PerlHost checks the script with ``perl -c``
before every start, does the READY/Init handshake (with its own, longer timeout), serves
``close``/``close_many`` (pipelined), and on a fault (the child exits, times out or writes
garbage) kills the child's whole process group at once, reports the calls in flight as failed
and restarts with capped exponential backoff. A start that fails (the script does not load,
Init dies or times out) is tried again forever, with backoff capped at
``HostSettings.start_backoff_cap``. A stop is graceful: EOF, the script's TERM handler and END
blocks, then a grace period for what the script started, then the group is killed. States are
values of :class:`HostState`, changed only by :meth:`PerlHost._change_state`; :meth:`PerlHost.snapshot`
reads them without waiting for a start in progress.
"""

from __future__ import annotations

import itertools
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import drain, protocol
from .errors import BridgeError, PerlFault, PerlStartError, ProtocolError, ScriptSyntaxError
from .home import Home
from .model import Attempt, HostState
from .perlenv import HOST_SCRIPT, HostSettings, check_syntax, host_command, perl_env

__all__ = ["HOST_SCRIPT", "Backoff", "HostSettings", "PerlHost", "check_syntax"]

DEFAULT_TIMEOUT = 30.0
_CHUNK = 65536
_COALESCE_ABOVE = 256  # outstanding replies above which the reader naps between reads
_COALESCE_SLEEP = 0.0005

log = logging.getLogger("ombridge.perl")
script_log = logging.getLogger("ombridge.script")  # what the user's script prints or warns


@dataclass(frozen=True)
class Backoff:
    """Restart delays: the first restart is immediate, then ``base * 2**n`` up to ``cap``.

    ``cap`` bounds the wait after faults of a running child; ``start_cap`` the wait after
    starts that failed (a ticket system unreachable at boot): those are tried again forever.
    """

    base: float = 0.5
    cap: float = 30.0
    start_cap: float = 300.0

    def delay(self, failures: int, failed_starts: int = 0) -> float:
        """Seconds to wait before the next start after ``failures`` faults in a row, of which
        the last ``failed_starts`` were starts that failed."""
        if failures <= 1:
            return 0.0
        cap = max(self.cap, self.start_cap) if failed_starts else self.cap
        return min(cap, self.base * 2 ** min(failures - 2, 30))




def _describe_exit(pid: int, status: int | None) -> str:
    if status is None:
        return f"perl child {pid} closed its reply channel"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"perl child {pid} was killed by {name}"
    return f"perl child {pid} exited with status {status}"


class _Child:
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
                 on_replies: Callable[[list[protocol.Reply]], None] | None = None,
                 every: int = 100) -> tuple[list[protocol.Reply], PerlFault | None]:
        """Send ``requests`` pipelined; collect one reply each, in order, until done or a fault.

        Each call has ``timeout`` seconds from the previous reply. Returns the replies received
        and the fault that stopped the exchange (None when every request was answered). With
        ``on_replies``, every ``every`` new replies are handed over as they arrive (the caller
        records them while perl works on), and at most ``window`` requests are ever sent ahead
        of the replies handed over: a crash of the caller repeats no more than that many.
        """
        ends = list(itertools.accumulate(len(r) for r in requests))
        payload = memoryview(b"".join(requests))
        sent = 0
        replies: list[protocol.Reply] = []
        handed = 0  # replies given to on_replies so far
        wanted = len(requests)
        ahead = wanted if window is None else window

        def allowed() -> int:  # bytes that may be sent now
            last = min(wanted, handed + ahead)
            return ends[last - 1] if last else 0

        with selectors.DefaultSelector() as sel:
            sel.register(self._reply, selectors.EVENT_READ)
            if self._exited is not None:
                sel.register(self._exited, selectors.EVENT_READ)
            writing = bool(payload)
            if writing:
                sel.register(self._stdin, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            while len(replies) < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return replies, PerlFault(f"call timed out after {timeout:g}s", self.pid)
                for key, _ in sel.select(remaining):
                    if key.fd == self._stdin:
                        limit = allowed()
                        try:
                            sent += os.write(self._stdin, payload[sent:min(limit, sent + _CHUNK)])
                        except BrokenPipeError:
                            sent = len(payload)  # the child is gone; its reply channel says how
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
                    if lines is None or (exited and len(replies) < wanted):
                        return replies, self._exit_fault()
                    if exited:
                        sel.unregister(self._exited)  # every reply was in the pipe
                    if not lines:
                        continue
                    deadline = time.monotonic() + timeout
                    if on_replies is not None and len(replies) - handed >= every:
                        on_replies(replies[handed:])
                        handed = len(replies)
                        if not writing and sent < len(payload):
                            sel.register(self._stdin, selectors.EVENT_WRITE)
                            writing = True
                    elif wanted - len(replies) > _COALESCE_ABOVE:
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
                if not self._fill(drain=exited) or exited:
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
        return PerlFault(_describe_exit(self.pid, status), self.pid, status)

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


StateListener = Callable[[HostState, HostState, str], None]


class PerlHost:
    """Runs one ``OMBackSync.pl`` in a persistent perl child and serves Init and Close."""

    def __init__(
        self,
        home: Home,
        *,
        script: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        settings: HostSettings | None = None,
        perl: str | None = None,
        host_script: Path = HOST_SCRIPT,
        backoff: Backoff | None = None,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
        on_state: StateListener | None = None,
    ) -> None:
        self.home = home
        self.script = script or home.script
        self.timeout = timeout  # one Close call
        self.settings = (settings or HostSettings()).with_perl(perl)
        self.host_script = host_script  # tests put a scripted stand-in here
        self.backoff = backoff or Backoff(start_cap=self.settings.start_backoff_cap)
        self.log = logger
        self.clock = clock
        self.on_state = on_state
        self.state = HostState.STOPPED
        self.last_error: str | None = None
        self.retry_at: float | None = None
        self.restarts = 0
        self.perl_version: str | None = None
        self.init_started_at: float | None = None  # wall clock, while a start is loading/Init-ing
        self._starting_pid: int | None = None
        self._failures = 0  # faults and failed starts in a row
        self._failed_starts = 0
        self._child: _Child | None = None
        self._lock = threading.RLock()
        self._closing = False  # set once by close_down: nothing starts afterwards

    @property
    def failed_starts(self) -> int:
        """Starts that failed in a row (0 once one succeeds)."""
        return self._failed_starts

    @property
    def perl(self) -> str:
        """The perl that runs the script."""
        return self.settings.perl

    # -- state -------------------------------------------------------------------------------

    def _change_state(self, new: HostState, reason: str = "") -> None:
        old, self.state = self.state, new
        if old is not new:
            level = logging.WARNING if new in (HostState.BACKOFF, HostState.FATAL, HostState.SYNTAX_ERROR) else logging.INFO
            self.log.log(level, "ombacksync %s -> %s%s", old.value, new.value, f": {reason}" if reason else "")
        if self.on_state:
            self.on_state(old, new, reason)

    def kill(self) -> None:
        """Kill the child's process group at once, without waiting for the lock (an immediate stop)."""
        child = self._child
        if child is not None:
            child.kill()

    @property
    def pid(self) -> int | None:
        """The child's pid while one runs."""
        child = self._child
        return child.pid if child else None

    def snapshot(self) -> dict[str, Any]:
        """The host as ``status`` shows it, read without the lock: it answers while Init runs.

        ``retry_in`` is the seconds until the next try (BACKOFF); ``init_running_for`` the
        seconds the current start has been loading the script and running Init (STARTING).
        """
        state, retry_at, started = self.state, self.retry_at, self.init_started_at
        pid = self.pid if state is not HostState.STARTING else self._starting_pid
        return {
            "state": state.value, "pid": pid, "script": str(self.script), "perl": self.perl_version,
            "perl_path": self.settings.perl, "restarts": self.restarts, "last_error": self.last_error,
            "retry_in": max(0.0, retry_at - self.clock()) if retry_at is not None and state is HostState.BACKOFF else None,
            "init_started_at": started if state is HostState.STARTING else None,
            "init_running_for": time.time() - started if started is not None and state is HostState.STARTING else None,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def check(self) -> str:
        """``perl -c`` the script (see :func:`bridge.perlenv.check_syntax`)."""
        return check_syntax(self.script, self.home, self.settings)

    def start(self) -> None:
        """Check, spawn, wait for READY, call Init. Raises on failure, leaving the state set.

        # STOPPED/BACKOFF/FATAL/SYNTAX_ERROR -> STARTING -> RUNNING
        #                                     STARTING -> SYNTAX_ERROR  (perl -c refused it)
        #                                     STARTING -> BACKOFF       (load or Init failed: tried again)
        """
        with self._lock:
            if self._closing:
                raise PerlStartError("ombridge is stopping: ombacksync is not started")
            if self._child:
                self._child.stop(self.settings.stop_grace)
                self._child = None
            self.init_started_at = time.time()
            self._change_state(HostState.STARTING)
            self.home.ensure_layout()
            self.home.private_dir(self.home.log_dir)  # `try` and `start` see the same layout
            try:
                self.check()
            except ScriptSyntaxError as exc:
                self.last_error = exc.message
                self.init_started_at = None
                self._change_state(HostState.SYNTAX_ERROR, exc.message)
                raise
            child = None
            limit = self.settings.init_timeout
            try:
                child = _Child(self.settings, self.host_script, self.script, self.home)
                self._starting_pid = child.pid
                if self._closing:  # close_down came while perl was being spawned
                    raise PerlStartError("ombridge is stopping: the start of ombacksync is abandoned", child.pid)
                ready, text = protocol.parse_greeting(child.read_line(limit), child.pid)
                if not ready:
                    raise PerlStartError(f"{self.script} could not be loaded: {text}", child.pid)
                replies, fault = child.exchange([protocol.INIT_REQUEST], limit)
                if fault:
                    reason = fault.reason.replace("call timed out", "Init timed out")
                    raise PerlStartError(f"OMBackSync('Init') failed: {reason}", child.pid)
                if not replies[0].ok:
                    raise PerlStartError(f"OMBackSync('Init') died: {replies[0].message}", child.pid)
            except (PerlStartError, PerlFault) as exc:
                if child:
                    child.kill()  # a failed start is a fault: no grace
                self._failed_starts += 1
                self.init_started_at = self._starting_pid = None
                self._after_fault(str(exc))
                raise exc if isinstance(exc, PerlStartError) else PerlStartError(str(exc), exc.pid) from exc
            self._child = child
            self.perl_version = text
            self._failed_starts = 0
            self.last_error = None
            self.retry_at = None
            self.init_started_at = self._starting_pid = None
            self._change_state(HostState.RUNNING, f"pid {child.pid}")

    def close_down(self) -> None:
        """No start from now on (the supervisor is stopping), and a child that is still loading
        the script or running Init is killed, so that the start in progress fails at once
        (without the lock: a stop must not wait out a slow Init). :meth:`stop` follows."""
        self._closing = True
        pid = self._starting_pid
        if pid is not None and self.state is HostState.STARTING:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> None:
        """Stop the child gracefully (see :meth:`_Child.stop`), killing what lingers after the grace."""
        with self._lock:
            if self._child:
                self._child.stop(self.settings.stop_grace)
                self._child = None
            self.retry_at = None
            self._change_state(HostState.STOPPED)

    def restart(self) -> None:
        """Check the script first: a broken one leaves the running child serving (and raises)."""
        with self._lock:
            self.check()
            self.stop()
            self._failures = self._failed_starts = 0
            self.start()

    def ensure_running(self) -> bool:
        """Start the child if it is stopped or its backoff is over; True when it is running.

        SYNTAX_ERROR waits for an operator (:meth:`start` or :meth:`restart`). (The supervisor's
        backsync lane never calls this on a STOPPED host: there, stopped is a decision.)
        """
        with self._lock:
            if self.state is HostState.RUNNING and self._child and self._child.alive():
                return True
            if self.state is HostState.RUNNING:
                assert self._child is not None
                self._child.kill()
                self._fault(self._child_exit_reason())
            if self.state is HostState.BACKOFF and self.retry_at is not None and self.clock() < self.retry_at:
                return False
            if self.state in (HostState.STOPPED, HostState.BACKOFF) and not self._closing:
                try:
                    self.start()
                except BridgeError:
                    return False
                return True
            return False

    def _child_exit_reason(self) -> str:
        assert self._child is not None
        return _describe_exit(self._child.pid, self._child.proc.returncode)

    def _fault(self, reason: str) -> None:
        self.restarts += 1
        if self._child:
            self._child.kill()  # hang, garbage, crash: at once, no grace
            self._child = None
        self._after_fault(reason)

    def _after_fault(self, reason: str) -> None:
        # RUNNING|STARTING -> BACKOFF; the next try is due at retry_at (forever, capped backoff)
        self.last_error = reason
        self._failures += 1
        self.retry_at = self.clock() + self.backoff.delay(self._failures, self._failed_starts)
        self._change_state(HostState.BACKOFF, f"{reason} (next try in {max(0.0, self.retry_at - self.clock()):.1f}s)")

    # -- calls -------------------------------------------------------------------------------

    def close(self, event_id: str | bytes) -> Attempt:
        """Call ``OMBackSync('Close', event_id)``."""
        return self.close_many([event_id])[0]

    def close_many(self, ids: Sequence[str | bytes], *, progress: Callable[[list[Attempt]], None] | None = None,
                   every: int = 100) -> list[Attempt]:
        """Close every ID, pipelined, and return one attempt per ID in order (``subject`` = the ID).

        With ``progress``, the attempts are also handed over ``every`` at a time as they
        complete, while perl goes on with at most ``2 * every`` more (see :meth:`_Child.exchange`);
        the returned list still holds them all. On a fault the call in flight fails with the
        reason, the ones after it come back ``attempted=False``, and the child is restarted
        (after backoff) on the next call.
        """
        requests = [protocol.close_request(i) for i in ids]  # refuses an empty ID up front
        if not requests:
            return []
        with self._lock:
            started = time.time()
            if not self.ensure_running():
                reason = f"ombacksync is {self.state.value}" + (f": {self.last_error}" if self.last_error else "")
                return [Attempt(False, started, started, error=reason, attempted=False, subject=i) for i in ids]
            assert self._child is not None
            done = 0

            def attempts(replies: list[protocol.Reply]) -> list[Attempt]:
                nonlocal done, started
                ended = time.time()
                out = [Attempt(r.ok, started, ended, error=r.message, subject=i)
                       for i, r in zip(ids[done:done + len(replies)], replies)]
                done, started = done + len(replies), ended
                return out

            handed: list[Attempt] = []

            def hand_over(replies: list[protocol.Reply]) -> None:
                batch = attempts(replies)
                handed.extend(batch)
                assert progress is not None
                progress(batch)

            try:
                replies, fault = self._child.exchange(
                    requests, self.timeout, window=2 * every if progress else None,
                    on_replies=hand_over if progress else None, every=every)
            except BaseException as exc:
                # ``progress`` failed (a full disk, say) with replies still in the pipe: a child
                # left running would hand them to the next call as its own. Restart it instead;
                # the unrecorded Closes stay claimed and run again (at-least-once).
                self._fault(f"the Closes in flight were abandoned: {exc}")
                raise
            outcomes = handed + attempts(replies[done:])
            ended = time.time()
            if replies:
                self._failures = 0
            if fault:
                self.log.error("ombacksync fault: %s", fault.reason)
                self._fault(fault.reason)
                outcomes.append(Attempt(False, started, ended, error=fault.reason, subject=ids[done]))
                outcomes.extend(Attempt(False, started, ended, error=f"not attempted: {fault.reason}",
                                        attempted=False, subject=i) for i in ids[done + 1:])
            return outcomes

    def deliver_all(self, ids: Iterable[str | bytes], sleep: Callable[[float], None] = time.sleep,
                    give_up_after: int = 3) -> list[Attempt]:
        """Close every ID once, waiting out restarts, until each was attempted or the host gave up.

        Gives up (the rest reported not attempted) after ``give_up_after`` failed starts in a
        row: ``try`` is interactive, unlike the supervisor, which tries again forever.
        """
        pending = list(ids)  # close_many refuses an empty ID before anything is sent
        results: list[Attempt] = []
        while pending:
            outcomes = self.close_many(pending)
            results.extend(o for o in outcomes if o.attempted)
            pending = [o.subject for o in outcomes if not o.attempted]
            if pending and (self.state in (HostState.FATAL, HostState.SYNTAX_ERROR, HostState.STOPPED)
                            or self._failed_starts >= give_up_after):
                results.extend(o for o in outcomes if not o.attempted)
                break
            if pending and self.retry_at is not None:
                sleep(max(0.0, self.retry_at - self.clock()))
        return results

    def __enter__(self) -> PerlHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

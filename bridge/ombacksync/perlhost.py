"""PerlHost: one persistent ``perl`` child running the user's ``OMBackSync.pl``, supervised.

The child is ``perl [#! switches] perl/ombridge_host.pl <reply fd> <script>`` (see
:mod:`bridge.ombacksync.protocol` and :mod:`bridge.ombacksync.perlenv`). PerlHost checks the script with ``perl -c``
before every start, does the READY/Init handshake (with its own, longer timeout), and serves
Closes: the backsync lane :meth:`~PerlHost.push` sends IDs and :meth:`~PerlHost.poll` returns their
outcomes (pipelined; it decides when to claim, record and wait), ``close_many`` does both for a
one-off batch. :meth:`~PerlHost.ready_at` says when Closes may be pushed. On a fault (the child exits, times out or writes
garbage) kills the child's whole process group at once, reports the calls in flight as failed
and restarts with capped exponential backoff. A start that fails (the script does not load,
Init dies or times out) is tried again forever, with backoff capped at
``HostSettings.start_backoff_cap``. A stop is graceful: EOF, the script's TERM handler and END
blocks, then a grace period for what the script started, then the group is killed. States are
values of :class:`HostState`, changed only by :meth:`PerlHost._change_state` (guarded by
:data:`bridge.model.HOST_MOVES`); :meth:`PerlHost.snapshot`
reads them without waiting for a start in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BridgeError, PerlFault, PerlStartError, ScriptSyntaxError
from ..eventcore.nodes import script_checksum
from ..home import Home
from ..model import HOST_MOVES, Attempt, HostState, check_transition
from ..processes import kill_group
from . import protocol
from .perlchild import PerlChild, describe_exit, describe_status
from .perlenv import HOST_SCRIPT, HostSettings, check_syntax

__all__ = ["HOST_SCRIPT", "Backoff", "HostSettings", "PerlHost", "check_syntax"]

DEFAULT_TIMEOUT = 30.0
# The host's exit status when a call destroyed its channel and was answered (ERR): the requests
# pipelined after it were never read (perl/ombridge_host.pl, channel_broken).
CHANNEL_REPLIED = 5

log = logging.getLogger("ombridge.perl")


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
        name: str = "ombacksync",
    ) -> None:
        self.home = home
        self.name = name  # "ombacksync", or "ombacksync[2]" for one of several children (the log's word)
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
        self.loaded_checksum: str | None = None  # sha256 of the script as the running child loaded it
        self._checked_checksum: str | None = None  # ... as it was when the start in progress checked it
        self.init_started_at: float | None = None  # wall clock, while a start is loading/Init-ing
        self._starting_pid: int | None = None
        self._failures = 0  # faults and failed starts in a row
        self._failed_starts = 0
        self._child: PerlChild | None = None
        self._subjects: deque[str | bytes] = deque()  # pushed, in order, no outcome returned yet
        self._settled: list[Attempt] = []  # outcomes read by a stop, for the next poll
        self._call_started = 0.0  # wall clock: when the call now in flight began
        self.closes = 0  # Closes this host answered (or failed) since the bridge started
        self._quiet_since = 0.0  # self.clock(): the last reply (or the push into an idle pipe)
        self._lock = threading.RLock()
        self._closing = False  # set once by close_down: nothing starts afterwards

    @property
    def failed_starts(self) -> int:
        """Starts that failed in a row (0 once one succeeds)."""
        return self._failed_starts

    # -- state -------------------------------------------------------------------------------

    def _change_state(self, new: HostState, reason: str = "") -> None:
        """The one place the host's state changes: guarded by :data:`HOST_MOVES`, logged, reported."""
        old = self.state
        check_transition(HOST_MOVES, old, new, self.name)
        if old is new:
            return
        self.state = new
        level = logging.WARNING if new in (HostState.BACKOFF, HostState.SYNTAX_ERROR) else logging.INFO
        self.log.log(level, "%s %s -> %s%s", self.name, old.value, new.value, f": {reason}" if reason else "")
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
            "script_checksum": self.loaded_checksum,
            "perl_path": self.settings.perl, "restarts": self.restarts, "last_error": self.last_error,
            "retry_in": max(0.0, retry_at - self.clock()) if retry_at is not None and state is HostState.BACKOFF else None,
            "init_started_at": started if state is HostState.STARTING else None,
            "init_running_for": time.time() - started if started is not None and state is HostState.STARTING else None,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def check(self) -> str:
        """``perl -c`` the script (see :func:`bridge.ombacksync.perlenv.check_syntax`)."""
        return check_syntax(self.script, self.home, self.settings)

    def start(self) -> None:
        """Check, spawn, wait for READY, call Init. Raises on failure, leaving the state set.

        # STOPPED/RUNNING/BACKOFF/SYNTAX_ERROR -> STARTING -> RUNNING
        #                                     STARTING -> SYNTAX_ERROR  (perl -c refused it)
        #                                     STARTING -> BACKOFF       (load or Init failed: tried again)
        """
        with self._lock:
            if self._closing:
                raise PerlStartError("ombridge is stopping: ombacksync is not started")
            self._stop_child()
            self.init_started_at = time.time()
            self._change_state(HostState.STARTING)
            self._prepare()
            child = None
            limit = self.settings.init_timeout
            try:
                child = PerlChild(self.settings, self.host_script, self.script, self.home)
                self._starting_pid = child.pid
                if self._closing:  # close_down came while perl was being spawned
                    raise PerlStartError("ombridge is stopping: the start of ombacksync is abandoned", child.pid)
                ready, text = protocol.parse_greeting(child.read_line(limit), child.pid)
                if not ready:
                    raise PerlStartError(f"{self.script} could not be loaded: {text}", child.pid)
                replies, fault = child.call([protocol.INIT_REQUEST], limit)
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
            self.loaded_checksum = self._checked_checksum
            self._failed_starts = 0
            self.last_error = None
            self.retry_at = None
            self.init_started_at = self._starting_pid = None
            self._change_state(HostState.RUNNING, f"pid {child.pid}")

    def _prepare(self) -> None:
        # STARTING -> SYNTAX_ERROR (perl -c refused the script), or -> BACKOFF when the check could
        # not even run (no perl, a read-only home): a failed start, tried again like the others.
        try:
            self.home.ensure_layout()
            self.home.private_dir(self.home.log_dir)  # `try` and `start` see the same layout
            self._checked_checksum = script_checksum(self.script)  # (read just before perl reads it)
            self.check()
        except ScriptSyntaxError as exc:
            self.last_error = exc.message
            self.init_started_at = None
            self._change_state(HostState.SYNTAX_ERROR, exc.message)
            raise
        except (BridgeError, OSError) as exc:
            self._failed_starts += 1
            self.init_started_at = None
            self._after_fault(str(exc))
            raise

    def close_down(self) -> None:
        """No start from now on (the supervisor is stopping), and a child that is still loading
        the script or running Init is killed, so that the start in progress fails at once
        (without the lock: a stop must not wait out a slow Init). :meth:`stop` follows."""
        self._closing = True
        pid = self._starting_pid
        if pid is not None and self.state is HostState.STARTING:
            kill_group(pid)

    def stop(self) -> None:
        """Stop the child gracefully (see :meth:`PerlChild.stop`), killing what lingers after the grace."""
        with self._lock:
            self._stop_child()
            self.retry_at = None
            self._change_state(HostState.STOPPED)

    def _stop_child(self) -> None:
        if self._child:
            self._settle_in_flight()
        if self._child:
            self._child.stop(self.settings.stop_grace)
            self._child = None

    def restart(self, *, checked: bool = False) -> None:
        """Check the script first (unless the caller just did): a broken one leaves the running
        child serving (and raises)."""
        with self._lock:
            if not checked:
                self.check()
            self.stop()
            self._failures = self._failed_starts = 0
            self.start()

    def ready_at(self) -> float | None:
        """When Closes may be pushed (on :attr:`clock`): now while running, the end of the
        backoff after a fault, None while ombacksync waits for an operator (``stopped``,
        ``syntax-error``) or for a start in progress. The one place readiness is decided: the
        backsync lane asks it, :meth:`ensure_running` follows it. Read without the lock."""
        state, retry_at = self.state, self.retry_at
        if state is HostState.RUNNING:
            return self.clock()
        if state is HostState.BACKOFF and not self._closing:
            return self.clock() if retry_at is None else retry_at
        return None

    def ensure_running(self) -> bool:
        """Start the child if :meth:`ready_at` says it is due (or it was never started: a host
        used on its own, by ``try``); True when it is running. A child found dead is a fault."""
        with self._lock:
            if self.state is HostState.RUNNING and self._child and self._child.alive():
                return True
            if self.state is HostState.RUNNING:
                self._settle_in_flight()  # a dead child: the replies it wrote, then its fault
            if self.state is HostState.RUNNING:
                self._fault(self._child_exit_reason())
            due = self.ready_at()
            if self.state is HostState.STOPPED and not self._closing or due is not None and due <= self.clock():
                try:
                    self.start()
                except BridgeError:
                    return False
                return True
            return False

    def serving(self) -> bool:
        """True while a running child can take a Close now (read without the lock; a dead one is
        left to :meth:`ensure_running`)."""
        child = self._child
        return self.state is HostState.RUNNING and child is not None and child.alive()

    def _child_exit_reason(self) -> str:
        assert self._child is not None
        return describe_exit(self._child.pid, self._child.wait(1.0))

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

    # -- calls: the backsync lane pushes Closes and polls for their outcomes ------------------

    @property
    def in_flight(self) -> int:
        """Closes pushed whose outcome :meth:`poll` has not returned yet."""
        return len(self._subjects) + len(self._settled)

    def push(self, ids: Sequence[str | bytes], *, start: bool = True) -> list[Attempt]:
        """Send ``Close`` requests for ``ids`` (pipelined, after those in flight); their outcomes
        come from :meth:`poll`, in order. Returns the outcomes of IDs that could not be sent at
        all (``attempted=False``: ombacksync is not running, or not due to start yet). Without
        ``start``, a child that is not running is not started here (one of several children:
        :class:`~bridge.ombacksync.perlpool.PerlPool` starts it in a thread of its own)."""
        requests = [protocol.close_request(i) for i in ids]  # refuses an empty ID up front
        if not requests:
            return []
        with self._lock:
            if not (self.ensure_running() if start else self.serving()):
                now = time.time()
                reason = f"ombacksync is {self.state.value}" + (f": {self.last_error}" if self.last_error else "")
                return [Attempt(False, now, now, error=reason, attempted=False, subject=i) for i in ids]
            assert self._child is not None
            if not self._subjects:
                self._call_started, self._quiet_since = time.time(), self.clock()
            self._child.push(requests)
            self._subjects.extend(ids)
            return []

    def current(self) -> tuple[str | bytes, float] | None:
        """(the ID of the Close being run now, since when on the wall clock), or None when idle."""
        try:  # (read without the lock: the queue may empty in between)
            return self._subjects[0], self._call_started
        except IndexError:
            return None

    def wait_fds(self) -> list[int]:
        """The descriptors a :meth:`poll` would wait on ([] while nothing is in flight): the backsync
        lane waits on several hosts' at once."""
        child = self._child
        return child.wait_fds() if child is not None and self._subjects else []

    def poll(self, timeout: float) -> list[Attempt]:
        """The outcomes that arrived, in the order pushed, waiting up to ``timeout`` seconds for
        the first ([] if none came). On a fault (the child exited, wrote garbage, or a call outlived
        the call timeout) the call in flight fails with the reason, the ones after it come back
        ``attempted=False``, and the child is killed (restarted after backoff by a later push)."""
        with self._lock:
            if self._settled:
                settled, self._settled = self._settled, []
                return settled
            return self._read(timeout)

    def _read(self, timeout: float) -> list[Attempt]:
        # The outcomes the child's replies (or its fault) give, waiting up to ``timeout``.
        if not self._subjects or self._child is None:
            return []
        wait = min(timeout, max(0.0, self._quiet_since + self.timeout - self.clock()))
        replies, fault = self._child.poll(wait)
        outcomes = self._outcomes(replies)
        if replies:
            self._failures = 0
        elif fault is None and self.clock() >= self._quiet_since + self.timeout:
            fault = PerlFault(f"call timed out after {self.timeout:g}s", self._child.pid,
                              replaced_by=self._child.replaced_by())
        if fault and fault.replaced_by:
            outcomes += self._fail_in_flight(self._after_exec(fault.replaced_by), final=True)
        elif fault:
            outcomes += self._fail_in_flight(fault.reason, ran=fault.status != CHANNEL_REPLIED)
        return outcomes

    def _after_exec(self, program: str) -> str:
        # The script called exec: the program runs as the host's process, in its place. It is
        # what the Close does now, so it has the rest of the call's time to end (plain perl would
        # let it run); then the one reason this Close fails with, and it is not run again: a
        # retry would run the program again (docs/compatibility.md, "exec").
        assert self._child is not None
        status = self._child.wait(max(0.0, self._quiet_since + self.timeout - self.clock()))
        how = (f"which {describe_status(status)}" if status is not None
               else f"which still ran at the call timeout ({self.timeout:g}s) and was killed")
        return (f"OMBackSync called exec: the perl host was replaced by {program}, {how}; this Close is "
                "not run again (that would run the program again), and ombacksync starts a new host")

    def abandon(self, reason: str) -> None:
        """The caller cannot take the outcomes of the Closes in flight (recording them failed):
        kill the child, so that none of their replies is ever read as another Close's. The
        Closes stay claimed and run again (at-least-once)."""
        with self._lock:
            self._subjects.clear()
            self._settled = []
            if self._child is not None:
                self._fault(f"the Closes in flight were abandoned: {reason}")

    def _outcomes(self, replies: list[protocol.Reply]) -> list[Attempt]:
        # Each call ran from the previous reply (or its push into an idle pipe) to its own reply.
        ended = time.time()
        out = []
        for reply in replies:
            out.append(Attempt(reply.ok, self._call_started, ended, output=reply.output, error=reply.message,
                               subject=self._subjects.popleft()))
            self._call_started = ended
        self.closes += len(replies)
        if replies:
            self._quiet_since = self.clock()
        return out

    def _fail_in_flight(self, reason: str, final: bool = False, ran: bool = True) -> list[Attempt]:
        # The call in flight failed (for good when ``final``: no retry may run it again); the ones
        # queued behind it never reached the script (nor did it, unless it ``ran``).
        self.log.error("%s fault: %s", self.name, reason)
        ended = time.time()
        child = self._child
        subjects, self._subjects = list(self._subjects), deque()
        self._fault(reason)  # kills the child: what the failed call printed is its leftover now
        out = [Attempt(False, ended, ended, error=f"not attempted: {reason}", attempted=False, subject=i)
               for i in subjects]
        if ran and out:
            self.closes += 1
            out[0] = Attempt(False, self._call_started, ended, output=child.leftover if child else "", error=reason,
                             subject=subjects[0], final=final)
        return out

    def _settle_in_flight(self) -> None:
        # Before the child is stopped: read the replies of the Closes in flight (they were sent,
        # so they run), so that poll() hands them over instead of their running again.
        while self._subjects and self._child is not None:
            self._settled += self._read(self.timeout)

    def close(self, close_id: str | bytes) -> Attempt:
        """Call ``OMBackSync('Close', close_id)``."""
        return self.close_many([close_id])[0]

    def close_many(self, ids: Sequence[str | bytes]) -> list[Attempt]:
        """Close every ID, pipelined, and return one attempt per ID in order (``subject`` = the ID).

        On a fault the call in flight fails with the reason, the ones after it come back
        ``attempted=False``, and the child is restarted (after backoff) on the next call.
        """
        with self._lock:
            outcomes = self.push(ids)
            if outcomes:
                return outcomes
            while len(outcomes) < len(ids):
                outcomes += self.poll(self.timeout)
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
            if pending and (self.state in (HostState.SYNTAX_ERROR, HostState.STOPPED)
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

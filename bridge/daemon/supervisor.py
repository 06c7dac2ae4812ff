"""The supervisor: one long-running process per home that owns the Event Manager and ombacksync.

``ombridge start`` runs it in the background (``--foreground`` keeps it attached, for systemd and
``make run``). It holds ``run/ombridge.pid`` locked while it lives (one supervisor per home),
logs to ``log/ombridge.log`` (rotated), answers the control channel and listens to the doorbell
(:mod:`bridge.daemon.controlserver`). Signals only set flags for the main loop: SIGTERM or SIGINT once stops
gracefully (the deliveries in flight finish, the rest stay open), twice stops at once; SIGHUP
restarts ombacksync. Lifecycle transitions are applied by the main loop only (see :class:`Supervisor`);
the periodic chores (:mod:`bridge.daemon.chores`) and the ``ombacksync/error`` reports
(:mod:`bridge.daemon.reporter`) run in threads of their own.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from enum import Enum
from typing import Any

from .. import __version__, channel, store
from ..channel import RESTARTABLE
from ..delivery import actions, backsync
from ..delivery.manager import EventManager
from ..errors import (
    BridgeError,
    PerlStartError,
    RestartRefused,
    ScriptSyntaxError,
    StoreError,
    UsageError,
)
from ..eventcore import audit, builtins, nodes
from ..eventcore.backlog import stored_backlog
from ..home import Home
from ..model import (
    SUPERVISOR_MOVES,
    ActionKind,
    HostState,
    ListenerState,
    ManagerState,
    SupervisorState,
    check_transition,
)
from ..ombacksync.perlenv import load_settings
from ..ombacksync.perlpool import PerlPool
from ..syncback import omisync
from . import controlserver
from .chores import Chores
from .heartbeat import Heartbeat
from .reporter import Reporter
from .wakeups import Wakeups

TYPE_CHECKING = False
if TYPE_CHECKING:
    ListenerFactory = Callable[..., Any]  # (home, store=, wake=, status=) -> a listener: start(), stop(), status()

log = logging.getLogger("ombridge.supervisor")
DEFAULT_RETENTION = 30 * 86400.0


def setup_logging(home: Home, to_stderr: bool) -> None:
    """Log to ``log/ombridge.log`` (10 MB x 5, rotated), and to stderr in the foreground.

    ``log/`` is owner-only: what the script prints lands there, and scripts may print secrets.
    """
    home.private_dir(home.log_dir)
    fmt = logging.Formatter(audit.LOG_FORMAT)  # (the command line appends its audit lines in it too)
    root = logging.getLogger("ombridge")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.handlers.RotatingFileHandler(home.log_dir / "ombridge.log", maxBytes=10 << 20,
                                                        backupCount=5, encoding="utf-8")
    file_handler.setFormatter(fmt)
    root.addHandler(file_handler)
    if to_stderr:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    root.propagate = False


class Command(str, Enum):
    """What signals, control requests and the perl host ask of the main loop."""

    STOP = "stop"  # graceful; a second one stops at once
    STOP_NOW = "stop-now"
    RESTART = "restart"  # with what to restart and a future for the answer
    HOST_CHANGED = "host-changed"  # ombacksync changed state (old, new, reason)




class Supervisor:
    """The daemon: run it with :meth:`run`; everything else is reached through the control channel.

    One thread, the main loop, owns every lifecycle decision: signal handlers, control requests
    and the perl host's state changes only put a :class:`Command` on a queue and wake it. The
    work a decision starts (checking and starting ombacksync, a restart, the shutdown) runs in
    one lifecycle thread, one job after another, so that two of them never overlap and the
    control channel keeps answering meanwhile. Once stopping began, nothing is started again.
    The main loop itself only dispatches: no store I/O and no action runs on it (the chores and
    the ``ombacksync/error`` reports have threads of their own).
    """

    def __init__(self, home: Home, *, workers: int = 4, per_subscriber: int | None = None, poll: float = 30.0,
                 log_to_stderr: bool = True,
                 retention: float | None = DEFAULT_RETENTION, metrics_textfile: str | None = None,
                 metrics_interval: float = 15.0, listen: ListenerFactory | None = None,
                 perl: str | None = None) -> None:
        self.home = home
        self.store = store.Store(home)  # this process's one Store, passed to everything that uses it
        self.perl = perl  # --perl: which perl runs the script (beats conf/ombridge.conf)
        self.listen = listen  # makes the HTTP listener (the command line's: it knows the web); None: nothing listens
        self.listener: Any = None
        self.workers = workers
        self.per_subscriber = per_subscriber
        self.poll = poll
        self.retention = retention  # seconds; None or 0: keep everything
        self.metrics_textfile = metrics_textfile
        self.chores = Chores(self.store, retention_seconds=retention, metrics_textfile=metrics_textfile,
                             metrics_interval=metrics_interval, status=self.status)
        self.log_to_stderr = log_to_stderr
        self.owner = f"{nodes.OWNER_PREFIX}{os.getpid()}"  # until the node joins (nodes.Node.owner)
        self.node: nodes.Node | None = None
        self.heartbeat: Heartbeat | None = None
        self.wakeups: Wakeups | None = None  # on a shared store: other nodes' NOTIFY wakes the lanes
        self.started_at = time.time()
        self.state = SupervisorState.STARTING
        self.host: PerlPool | None = None
        self.manager: EventManager | None = None
        self.reporter: Reporter | None = None  # started with the run: ombacksync/error events
        self._commands: queue.SimpleQueue[tuple[Command, Any]] = queue.SimpleQueue()  # put() is reentrant
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any] | None] | None] = queue.SimpleQueue()
        self._done = threading.Event()  # stopped: the main loop may end
        self._wake_r, self._wake_w = os.pipe()
        self._lock_fd: int | None = None

    # -- state ---------------------------------------------------------------------------------

    def _change_state(self, new: SupervisorState) -> None:
        """The one place the supervisor's state changes (guarded by :data:`model.SUPERVISOR_MOVES`, logged)."""
        old = self.state
        check_transition(SUPERVISOR_MOVES, old, new, "supervisor")
        self.state = new
        log.info("supervisor %s -> %s", old.value, new.value)

    def _command(self, command: Command, arg: Any = None) -> None:
        """Queue a command for the main loop and wake it (safe in a signal handler)."""
        self._commands.put((command, arg))
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    # -- life ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit code."""
        self._take_lock()
        setup_logging(self.home, self.log_to_stderr)
        try:
            return self._run()
        finally:
            self._cleanup()

    def _take_lock(self) -> None:
        fd = channel.lock_home(self.home)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _run(self) -> int:
        conn = self.store.connect()
        try:
            damage = store.integrity(conn, quick=True)
            if damage:
                # Refuse rather than half-run on a damaged core (and log errors every second).
                raise StoreError(f"the event core {self.home.db} is damaged ({damage[0]}); nothing was started: "
                                 "see `ombridge check --db` and the recovery procedure in docs/operations.md")
            builtins.ensure_all(conn)
            taken = self._join(conn)
            timeout = backsync.close_timeout(conn)
        finally:
            conn.close()
        if taken:
            log.warning("took back %d deliveries claimed by a supervisor that died", taken)
        self.heartbeat = Heartbeat(self.store, self.node, lambda: self.host.loaded_checksum if self.host else None,
                                         on_taken=lambda: self.manager.wake() if self.manager else None,
                                         on_replaced=lambda why: self._command(Command.STOP))
        self.heartbeat.start()
        self.chores.start()
        control_sock, doorbell = controlserver.bind(self.home.run_dir)
        settings = load_settings(self.home, self.perl)
        self.host = PerlPool.create(self.home, settings.children, timeout=timeout, settings=settings,
                                    on_state=lambda old, new, why: self._command(Command.HOST_CHANGED, (old, new, why)))
        self.manager = EventManager(self.home, self.store, self.host, owner=self.owner, workers=self.workers, poll=self.poll,
                                    per_subscriber=self.per_subscriber,
                                    others={ActionKind.OMI: omisync.SyncBack(self.home, self.store).deliver})
        self.reporter = Reporter(self.home, self.store, on_stored=self.manager.wake)
        if self.listen is not None:
            # Before perl starts, so that a busy port or a bad certificate fails the start at once.
            self.listener = self.listen(self.home, store=self.store, wake=self.manager.wake, status=self.status)
            self.listener.start()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        log.info("supervisor %d started in %s (ombridge %s)", os.getpid(), self.home.root, __version__)
        lifecycle = threading.Thread(target=self._lifecycle, name="lifecycle", daemon=True)
        lifecycle.start()
        self.manager.start()
        if self.store.shared:  # other nodes may make work due
            self.wakeups = Wakeups(self.store, self.manager.wake)
            self.wakeups.start()
        self._change_state(SupervisorState.RUNNING)
        self._jobs.put((self._start_ombacksync, None))
        try:
            self._loop(control_sock, doorbell)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.chores.stop()
        self._change_state(SupervisorState.STOPPED)
        log.info("supervisor %d stopped", os.getpid())
        return 0

    def _join(self, conn: Any) -> int:
        # This supervisor is the home's node in the store: it takes back what its earlier runs
        # left claimed (on SQLite, whatever any supervisor of the home left: one box, one node).
        self.node = nodes.this_node(self.home, self.store)
        self.owner = self.node.owner
        everything = None if self.store.shared else nodes.OWNER_PREFIX
        return nodes.join(conn, self.node, version=__version__, checksum=None,  # (perl has loaded nothing yet)
                          reclaim_prefix=everything)

    def _lifecycle(self) -> None:
        # Lifecycle jobs, one at a time, in order; the shutdown job is the last one.
        while True:
            job = self._jobs.get()
            if job is None:
                return
            work, answer = job
            try:
                result = work()
            except BridgeError as exc:
                if answer is None:
                    log.error("%s", exc)
                else:
                    answer.set_exception(exc)
            except Exception as exc:  # a job never takes the supervisor down
                log.exception("lifecycle job failed")
                if answer is not None:
                    answer.set_exception(BridgeError(f"internal error: {exc}"))
            else:
                if answer is not None:
                    answer.set_result(result)

    def _shutdown(self) -> None:
        # The last lifecycle job: the deliveries in flight finish, the rest stay open.
        log.info("stopping: finishing the deliveries in flight")
        assert self.manager is not None and self.host is not None
        if self.listener is not None:
            self.listener.stop()  # drain first: the requests in flight are committed and answered
        if self.wakeups is not None:
            self.wakeups.stop()
        self.manager.stop()
        self.host.stop()
        self._leave()
        if self.reporter is not None and not self.reporter.close():
            log.warning("stopping without waiting for the ombacksync/error report still being made")
        self._jobs.put(None)
        self._done.set()
        os.write(self._wake_w, b"!")

    def _leave(self) -> None:
        # A clean stop: the node is shown stopped (not dead); what it still claims was settled.
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.node is None:
            return
        try:
            with self.store.lend() as conn:
                nodes.leave(conn, self.node)
        except (BridgeError, *store.failures()) as exc:
            log.warning("could not record the stop of node %s: %s", self.node.name, exc)

    def _loop(self, control_sock: socket.socket, doorbell: socket.socket) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(control_sock, selectors.EVENT_READ, "control")
            sel.register(doorbell, selectors.EVENT_READ, "doorbell")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._done.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "control":
                        controlserver.accept(control_sock, self)
                    elif key.data == "doorbell":
                        controlserver.drain(doorbell)
                        assert self.manager is not None
                        self.manager.wake()
                    else:
                        os.read(self._wake_r, 4096)
                self._apply_commands()
            control_sock.close()
            doorbell.close()

    def _apply_commands(self) -> None:
        """Apply what was asked since the last turn of the loop (the main loop's thread only)."""
        while True:
            try:
                command, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if command is Command.STOP_NOW or (command is Command.STOP and self.state is SupervisorState.STOPPING):
                self.stop_now()
            elif command is Command.STOP:
                # RUNNING|STARTING -> STOPPING: queued behind a restart in progress, never beside it
                self._change_state(SupervisorState.STOPPING)
                if self.host is not None:
                    self.host.close_down()  # nothing starts any more; an Init in progress (minutes, maybe) is abandoned
                self._jobs.put((self._shutdown, None))
            elif command is Command.RESTART:
                what, answer = arg
                if self.state is not SupervisorState.RUNNING:
                    answer.set_exception(BridgeError(f"ombridge is {self.state.value}: nothing is restarted"))
                else:
                    self._jobs.put((lambda what=what: self._restart(what), answer))
            elif command is Command.HOST_CHANGED:
                self._host_changed(*arg)

    def _cleanup(self) -> None:
        self.store.close()
        controlserver.unlink(self.home.run_dir)
        if self._lock_fd is not None:
            try:
                os.unlink(self.home.run_dir / channel.PIDFILE)
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- stopping ------------------------------------------------------------------------------

    def request_stop(self, now: bool = False) -> None:
        """Ask for a stop: graceful the first time, at once the second time (or with ``now``)."""
        self._command(Command.STOP_NOW if now else Command.STOP)

    def stop_now(self) -> None:
        """Kill the perl child and every action in flight, and exit; claims are taken back on the next start."""
        log.warning("stopping at once: killing the perl child and %d action(s) in flight", actions.running_count())
        if self.host is not None:
            self.host.kill()
        actions.kill_running()
        self._cleanup()
        logging.shutdown()
        os._exit(0)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only queue: the main loop acts on it.
        if signum == signal.SIGHUP:
            self._command(Command.RESTART, ("ombacksync", _LoggedAnswer("restart on SIGHUP")))
        else:
            self._command(Command.STOP)

    # -- ombacksync ----------------------------------------------------------------------------

    def _start_ombacksync(self) -> None:
        assert self.host is not None
        if self.state is not SupervisorState.RUNNING:
            return  # stopping began before this job ran: nothing starts
        try:
            self.host.start()
        except ScriptSyntaxError:
            pass  # reported through HOST_CHANGED; Close deliveries wait, open
        except PerlStartError as exc:
            log.error("ombacksync did not start: %s", exc)  # the backsync lane retries after backoff

    def _host_changed(self, old: HostState, new: HostState, reason: str) -> None:
        # On the main loop: decide only. The report (store I/O, synchronized subscribers that may
        # sleep) is the reporter thread's, so that signals and control requests never wait for it.
        assert self.manager is not None and self.reporter is not None
        self.manager.wake()  # the backsync lane waits on ombacksync's state: let it look again
        first_failed_start = new is HostState.BACKOFF and old is HostState.STARTING and self.host is not None \
            and self.host.failed_starts == 1  # a failing Init is tried again forever: told once
        if (new is HostState.SYNTAX_ERROR and old is not new) or first_failed_start:
            log.error("ombacksync stopped (%s): %s; Close deliveries wait, open", new.value, reason)
            self.reporter.report(reason)

    def restart(self, what: str, timeout: float = channel.RESTART_TIMEOUT) -> dict[str, Any]:
        """Ask the main loop for a restart and wait for its answer (any thread but the main loop's)."""
        if what not in RESTARTABLE:
            raise UsageError(f"cannot restart {what!r}: one of {', '.join(RESTARTABLE)}")
        answer: Future[dict[str, Any]] = Future()
        self._command(Command.RESTART, (what, answer))
        try:
            return answer.result(timeout)
        except FutureTimeout:
            raise BridgeError(f"the restart of {what} did not finish within {timeout:g}s") from None

    def _restart(self, what: str) -> dict[str, Any]:
        # A lifecycle job: restart ombacksync (checking the script first), the Event Manager, or both.
        assert self.host is not None and self.manager is not None
        if self.state is not SupervisorState.RUNNING:
            raise BridgeError(f"ombridge is {self.state.value}: nothing is restarted")
        if what in ("ombacksync", "all"):
            with self.store.lend() as conn:
                self.host.timeout = backsync.close_timeout(conn)  # `subscriber set 1 --timeout` applies here
            if self.host.any_running():
                try:
                    self.host.restart()  # a broken script raises here, the old children serving on
                except ScriptSyntaxError as exc:
                    # Told like a failed start: the file on disk would fail the next start.
                    log.error("restart refused, the running ombacksync kept: %s", exc.message)
                    assert self.reporter is not None
                    self.reporter.report(exc.message, exc.script)
                    raise RestartRefused(exc.script, exc.message) from exc
            else:
                self.host.start()
            log.info("ombacksync restarted by the operator (pid %s)", self.host.pid)
        if what in ("eventmanager", "all"):
            self.manager.stop()
            self.manager.start()
        self.manager.wake()
        return self.status()

    # -- control -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``ombridge status`` shows (answered at once, whatever the lifecycle is doing)."""
        host, manager = self.host, self.manager
        degraded = []
        backlog, nodes_now, troubles, paused = stored_backlog(self.home, self.store)
        degraded += troubles
        if self.heartbeat is not None and self.heartbeat.last_error:
            degraded.append(f"the heartbeat of node {self.node.name if self.node else '?'} failed: "
                            f"{self.heartbeat.last_error}")
        host_state = host.state if host else HostState.STOPPED
        listener_status = self.listener.status() if self.listener else {"state": ListenerState.OFF.value}
        if listener_status["state"] == ListenerState.FAILED.value:
            degraded.append(f"the HTTP listener failed: {listener_status.get('error') or 'see the log'}")
        manager_status = manager.status() if manager else {"state": ManagerState.STOPPED.value}
        if self.state is SupervisorState.RUNNING:
            if host_state is not HostState.RUNNING:
                degraded.append(f"ombacksync is {host_state.value}")
            if manager_status["state"] != ManagerState.RUNNING.value:
                degraded.append(f"the event manager is {manager_status['state']}")
            if manager_status.get("last_error"):
                degraded.append(f"the event manager failed: {manager_status['last_error']}")
        return {
            "supervisor": {"state": self.state.value, "pid": os.getpid(), "home": str(self.home.root),
                           "started_at": self.started_at, "version": __version__,
                           "retention_seconds": self.retention or None, "metrics_textfile": self.metrics_textfile},
            # read without the host's lock: status answers at once while Init runs
            "ombacksync": host.snapshot() if host else {"state": HostState.STOPPED.value, "pid": None, "restarts": 0},
            "eventmanager": manager_status,
            "listener": listener_status,
            "backlog": backlog,
            "paused": paused,
            "nodes": nodes_now,
            "degraded": degraded,
        }


class _LoggedAnswer(Future):  # type: ignore[type-arg]
    """An answer nobody waits for (a restart on SIGHUP): a refusal is logged."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def set_exception(self, exception: BaseException | None) -> None:
        log.error("%s refused: %s", self.what, exception)
        super().set_exception(exception)

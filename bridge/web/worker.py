"""One listener process (``python -m bridge.web.worker``), started by the supervisor's
:class:`bridge.web.workers.ListenerProcesses`: the HTTP listener, its XML parsing and its group
commit, on a GIL of its own.

It inherits the listening socket (already bound by the supervisor: every process accepts on it)
and talks to the supervisor over its standard input and output (:mod:`bridge.web.pipes`; its own
standard output is moved to standard error first, so that nothing else can write into the
pipe). The first line it reads is its spec: the home, the listener's settings, the socket's file
descriptor, the console's signing key. Through the pipe it asks the supervisor for its status
(the console's pages, ``/metrics``) and for the login throttle shared by every listener process;
it answers its own status and ``stop``, and sends its log records. It wakes the Event Manager
after each commit through the doorbell, as ``ombridge send`` does.

When the supervisor goes away (its end of the pipe closes: a kill -9 included) the process exits
at once: what it acknowledged is committed, what it did not is sent again by OMi.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from ..doorbell import ring
from ..home import Home
from ..store import Store
from .auth import FailureThrottle
from .config import ListenConfig
from .pipes import Pipe, PipeClosed


class RemoteThrottle(FailureThrottle):
    """The login throttle of every listener process, kept by the supervisor: each method is a
    call through the pipe (made only for a password check, which costs ~50 ms itself). With the
    supervisor gone, every check is refused (a listener about to exit)."""

    def __init__(self, pipe: Pipe) -> None:
        super().__init__()
        self.pipe = pipe

    def _ask(self, method: str, *args: Any, refused: Any) -> Any:
        try:
            return self.pipe.call("throttle", method=method, args=list(args))
        except PipeClosed:
            return refused

    def admit(self, address: str) -> float:  # noqa: D102 - as FailureThrottle's, across processes
        return float(self._ask("admit", address, refused=1.0))

    def release(self, address: str, ok: bool) -> None:  # noqa: D102
        self._ask("release", address, ok, refused=None)

    def failed(self, address: str) -> int:  # noqa: D102
        return int(self._ask(FailureThrottle.failed.__name__, address, refused=0))

    def succeeded(self, address: str) -> None:  # noqa: D102
        self._ask("succeeded", address, refused=None)

    def count(self, address: str) -> int:  # noqa: D102
        return int(self._ask("count", address, refused=0))

    def delay(self, address: str) -> float:  # noqa: D102
        return float(self._ask("delay", address, refused=1.0))

    def __len__(self) -> int:
        return int(self._ask("size", refused=0))


class _PipeLog(logging.Handler):
    """Log records sent to the supervisor, which logs them into the home's log as they are (an
    audit line reads the same whichever process wrote it)."""

    def __init__(self, pipe: Pipe) -> None:
        super().__init__()
        self.pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.pipe.note(log=record.name, level=record.levelno, message=text)


def _pipe_ends() -> tuple[Any, Any]:
    # The pipe is our stdin and stdout; stdout then points at stderr (a stray print() cannot
    # corrupt the protocol) and stdin at /dev/null.
    reading = os.fdopen(os.dup(0), "rb", buffering=0)
    writing = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    return reading, writing


def main() -> int:
    """Serve until the supervisor says ``stop`` (drain) or goes away (exit at once)."""
    from .listener import Listener

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (a terminal's ^C is the supervisor's to act on)
    reading, writing = _pipe_ends()
    spec = json.loads(reading.readline())
    home = Home(spec["home"])
    index = spec["index"]
    config = ListenConfig(**{**spec["config"], "trusted_proxies": tuple(spec["config"]["trusted_proxies"])})
    stop, done = threading.Event(), threading.Event()  # done: told to stop, or the supervisor gone
    holder: dict[str, Any] = {}

    def stopping(*_: Any) -> bool:
        stop.set()
        done.set()
        return True

    def supervisor_status() -> dict[str, Any]:
        # What the console's pages and /metrics show; {} (as with no supervisor) while it stops
        try:
            return pipe.call("status") or {}
        except PipeClosed:
            return {}

    def handle(op: str, args: dict[str, Any]) -> Any:
        if op == "status":
            return holder["listener"].status()
        if op == "stop":
            return stopping()
        raise ValueError(f"unknown call {op!r}")

    pipe = Pipe(reading, writing, f"listener process {index}", handle, on_close=done.set)
    signal.signal(signal.SIGTERM, stopping)
    ours = logging.getLogger("ombridge")
    ours.handlers = [_PipeLog(pipe)]
    ours.setLevel(logging.INFO)
    ours.propagate = False
    pipe.start()
    try:
        listener = holder["listener"] = Listener(
            home, config, store=Store(home), wake=lambda: ring(home.root), status=supervisor_status,
            sock=socket.socket(fileno=spec["fd"]), throttle=RemoteThrottle(pipe),
            session_key=bytes.fromhex(spec["session_key"]))
        listener.start()
    except Exception as exc:  # noqa: BLE001 - said to the supervisor, which fails its start with it
        pipe.note(started=False, reason=str(exc))
        pipe.close()
        return 1
    pipe.note(started=True, pid=os.getpid())
    done.wait()
    if not stop.is_set():
        os._exit(0)  # the supervisor died: nothing here was acknowledged that is not committed
    listener.stop()
    pipe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

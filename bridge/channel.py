"""What both halves of the supervisor's control channel share (the client's
:mod:`bridge.client.control`, the supervisor's :mod:`bridge.daemon.controlserver`): the names in
the home's ``run/``, the restartable parts, and the home's lock, which one supervisor holds while
it runs (``store copy`` takes it too)."""

from __future__ import annotations

import os

from .errors import AlreadyRunning

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .home import Home

RESTART_TIMEOUT = 600.0  # seconds a restart may take (perl -c, a graceful stop, Init) before it is reported unanswered
RESTARTABLE = ("ombacksync", "eventmanager", "all")  # what ``restart`` takes

CONTROL = "control.sock"
PIDFILE = "ombridge.pid"


def lock_home(home: Home) -> int:
    """Take the home's lock (its pid file's, owner-only), which one supervisor holds while it
    runs; returns the open descriptor that holds it. Raises :class:`AlreadyRunning` with the
    holder's pid."""
    import fcntl

    fd = os.open(home.private_dir(home.run_dir) / PIDFILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(read_pid(home)) from None
    return fd


def read_pid(home: Home) -> int | None:
    """The pid in the pid file, if any (it may be stale)."""
    try:
        return int((home.run_dir / PIDFILE).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None

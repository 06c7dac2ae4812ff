"""The audit trail: one log line per state change an operator makes, naming who made it.

Every change from the console or the command line (pause, resume, disable, enable, retry, purge,
subscribers, topics and filters, users, restarts and stops) is told to the logger
``ombridge.audit`` as one line::

    ... INFO ombridge.audit: local user alice on host-a (command line): subscriber 1 paused

Who: the console user (``console user admin``); the local user of a command that writes the event
core itself (``local user alice on host-a (command line)``: the process's effective user); for a
command sent through the supervisor's control socket (``restart``, ``stop``), the user the socket
names as its peer (``SO_PEERCRED``). What: the sentence the command answered, which never holds a
secret (a password, a header's value): it names what changed, not the new values of secrets.

Where: the supervisor's lines (the console, the control socket) go to its log, ``log/ombridge.log``.
A command that writes the event core itself appends its line to that same file, whether a
supervisor runs or not (:func:`to_home_log`): the home's one log holds the whole trail.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

log = logging.getLogger("ombridge.audit")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the supervisor's (bridge/daemon/supervisor.py)


def user_name(uid: int) -> str:
    """The login name of ``uid`` (``uid 1234`` when the system knows none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def local_user() -> str:
    """Who runs this command: ``local user NAME on HOST (command line)``."""
    return f"local user {user_name(os.geteuid())} on {socket.gethostname()} (command line)"


def console_user(name: str) -> str:
    """A user of the console: ``console user NAME``."""
    return f"console user {name}"


def peer_user(sock: socket.socket) -> str:
    """The user at the other end of a Unix socket (``SO_PEERCRED``): ``local user NAME (pid N)``."""
    import struct

    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    except (OSError, AttributeError):
        return "an unknown local user"
    return f"local user {user_name(uid)} (pid {pid})"


def record(who: str, what: str) -> None:
    """One audit line: ``who`` did ``what`` (a sentence without secrets), on one line."""
    log.info("%s: %s", _one_line(who), _one_line(what))


def _one_line(text: str) -> str:
    # A value an operator typed (a pattern, a regex) must not start a second, forged line.
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _HomeLog(logging.FileHandler):
    """The home's log file, opened to append a line (never rotated from here: the supervisor
    rotates it); a line that cannot be written is said on stderr once, without a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  (logging's name)
        exc = sys.exc_info()[1]
        print(f"ombridge: warning: the audit line could not be written to {self.baseFilename}: {exc}",
              file=sys.stderr)


def to_home_log(log_dir: Path) -> None:
    """Send this process's audit lines to ``log_dir/ombridge.log`` too (the command line's; the
    supervisor's own logging already does). Called once per process; ``log_dir`` is made
    owner-only when it does not exist yet."""
    if any(isinstance(h, _HomeLog) for h in log.handlers):
        return
    try:
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        print(f"ombridge: warning: no audit line: {log_dir} cannot be made: {exc.strerror or exc}", file=sys.stderr)
        return
    handler = _HomeLog(log_dir / "ombridge.log", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # (not repeated on the command line's stderr)

"""The supervisor's control channel and doorbell, both Unix sockets in the home's ``run/``: the
client's half (the supervisor's is :mod:`bridge.daemon.controlserver`).

``run/`` is owner-only (0700) and so are the sockets: nothing listens on a network address.

- ``run/control.sock`` (stream): one JSON request line, one JSON reply line:
  ``{"command": "status"}`` -> ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``.
  Commands: ``status``, ``stop`` (``"now": true`` to stop at once), ``restart`` (``"what"``). A stop
  and a restart are written to the audit trail naming the peer's user (``SO_PEERCRED``), and the
  console user a console asks for (``"by"``).
- ``run/doorbell.sock`` (datagram): any datagram wakes the Event Manager. ``send`` rings it after
  storing deliveries, so they start within milliseconds; polling is only the fallback.
"""

from __future__ import annotations

import json
import os
import socket

from ..channel import (  # noqa: F401  (re-exported)
    CONTROL,
    PIDFILE,
    RESTART_TIMEOUT,
    RESTARTABLE,
    lock_home,
    read_pid,
)
from ..doorbell import DOORBELL, SocketAddress, ring, run_dir  # noqa: F401  (re-exported)
from ..errors import BridgeError, NotRunning

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def request(root: str | os.PathLike[str], command: str, timeout: float = 120.0, **args: Any) -> Any:
    """Send one command to the running supervisor and return its result.

    Raises :class:`NotRunning` when no supervisor answers, :class:`BridgeError` with the
    supervisor's message when the command failed.
    """
    with SocketAddress(run_dir(root), CONTROL) as addr, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(addr.address)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
            raise NotRunning(f"ombridge is not running in {os.fspath(root)}") from exc
        data = b""
        try:
            sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise BridgeError(f"the supervisor closed the connection without answering {command!r}")
                data += chunk
        except socket.timeout as exc:
            raise BridgeError(f"the supervisor did not answer {command!r} within {timeout:g}s") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:  # it died while we asked
            raise NotRunning(f"the supervisor in {os.fspath(root)} went away while answering {command!r}") from exc
    reply = json.loads(data)
    if not reply.get("ok"):
        raise BridgeError(reply.get("error") or f"{command} failed")
    return reply.get("result")

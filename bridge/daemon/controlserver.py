"""The supervisor's half of the control channel and the doorbell (the client's half, and the
protocol, are in :mod:`bridge.client.control`).

:func:`bind` makes both sockets owner-only in ``run/``; the main loop accepts a control
connection and hands it to :func:`answer` in a thread of its own, so that a restart waiting
for Init never holds up a ``status`` or a ``stop``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Protocol

from ..channel import CONTROL
from ..doorbell import DOORBELL, SocketAddress
from ..errors import BridgeError
from ..eventcore import audit

log = logging.getLogger("ombridge.supervisor")


class Controlled(Protocol):
    """What the control channel asks of the supervisor."""

    def status(self) -> dict[str, Any]: ...

    def request_stop(self, now: bool = False) -> None: ...

    def restart(self, what: str) -> dict[str, Any]: ...


def bind(run_dir: Path) -> tuple[socket.socket, socket.socket]:
    """(the listening control socket, the doorbell socket), both non-blocking and owner-only.

    Stale sockets are replaced: the caller holds the home's lock, so no one else uses them.
    """
    socks = []
    for name, kind in ((CONTROL, socket.SOCK_STREAM), (DOORBELL, socket.SOCK_DGRAM)):
        with SocketAddress(str(run_dir), name) as addr:
            try:
                os.unlink(addr.path)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, kind)
            old = os.umask(0o077)
            try:
                sock.bind(addr.address)
            finally:
                os.umask(old)
            os.chmod(addr.path, 0o600)
            if kind == socket.SOCK_STREAM:
                sock.listen(16)
            sock.setblocking(False)
            socks.append(sock)
    return socks[0], socks[1]


def unlink(run_dir: Path) -> None:
    """Remove both sockets (the supervisor is going)."""
    for name in (CONTROL, DOORBELL):
        try:
            os.unlink(run_dir / name)
        except OSError:
            pass


def accept(control_sock: socket.socket, target: Controlled) -> None:
    """Take one waiting control connection, if any, and answer it in a thread of its own."""
    try:
        client, _ = control_sock.accept()
    except BlockingIOError:
        return
    threading.Thread(target=answer, args=(client, target), name="control", daemon=True).start()


def drain(doorbell: socket.socket) -> None:
    """Read every waiting doorbell datagram (one wake-up serves them all)."""
    while True:
        try:
            doorbell.recv(64)
        except (BlockingIOError, InterruptedError):
            return


def answer(client: socket.socket, target: Controlled) -> None:
    """Read one request line from ``client``, act on it and write one reply line."""
    with client:
        client.settimeout(10.0)
        try:
            req = _read_request(client)
            if req is None:
                return
            command = req.get("command")
            if command == "status":
                reply: dict[str, Any] = {"ok": True, "result": target.status()}
            elif command == "stop":
                # Answered first: a stop-now exits the process before it could answer.
                audit.record(_who(client, req), "stop" + (" now" if req.get("now") else "") + " asked for")
                _send(client, {"ok": True, "result": {"pid": os.getpid()}})
                target.request_stop(now=bool(req.get("now")))
                return
            elif command == "restart":
                client.settimeout(None)  # a restart waits for perl -c and Init
                what = str(req.get("what", "ombacksync"))
                try:
                    reply = {"ok": True, "result": target.restart(what)}
                except BridgeError as exc:
                    audit.record(_who(client, req), f"restart {what} refused: {exc}")
                    raise
                audit.record(_who(client, req), f"restart {what}: done")
            else:
                reply = {"ok": False, "error": f"unknown command {command!r}"}
        except BridgeError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (OSError, ValueError) as exc:
            log.warning("control request failed: %s", exc)
            return
        try:
            _send(client, reply)
        except OSError:
            pass


def _who(client: socket.socket, req: dict[str, Any]) -> str:
    # The peer's user (SO_PEERCRED); a console of this supervisor says for whom it asks.
    peer = audit.peer_user(client)
    return f"{audit.console_user(str(req['by']))} (through {peer})" if req.get("by") else peer


def _read_request(client: socket.socket) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(65536)
        if not chunk:
            return None
        data += chunk
    req = json.loads(data)
    if not isinstance(req, dict):
        raise ValueError("a control request is a JSON object")
    return req


def _send(client: socket.socket, reply: dict[str, Any]) -> None:
    client.sendall(json.dumps(reply, default=str).encode() + b"\n")

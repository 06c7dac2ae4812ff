"""The doorbell: a datagram to the supervisor's ``run/doorbell.sock`` wakes the Event Manager.

Kept tiny and on the C-level ``_socket`` module: ``ombridge send`` rings it after every send
that stored deliveries, and importing :mod:`socket` alone would cost it ~2 ms.
"""

from __future__ import annotations

import os

import _socket

DOORBELL = "doorbell.sock"
MAX_PATH = 100  # sun_path holds 108 bytes


def ring(root: str | os.PathLike[str]) -> None:
    """Wake the Event Manager, if a supervisor runs; never blocks, never fails."""
    folder = os.path.join(os.fspath(root), "run")
    path = os.path.join(folder, DOORBELL)
    fd = None
    try:
        if len(path.encode()) > MAX_PATH:  # reach a long path through a descriptor of its folder
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            path = f"/proc/self/fd/{fd}/{DOORBELL}"
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.sendto(b"!", path)
        finally:
            sock.close()
    except OSError:
        pass  # not running, or its queue is full (then it is awake anyway)
    finally:
        if fd is not None:
            os.close(fd)

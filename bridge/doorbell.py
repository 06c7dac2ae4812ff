"""The doorbell: a datagram to the supervisor's ``run/doorbell.sock`` wakes the Event Manager.

Kept tiny and on the C-level ``_socket`` module: ``ombridge send`` rings it after every send
that stored deliveries, and importing :mod:`socket` alone would cost it ~2 ms.
"""

from __future__ import annotations

import _socket
import os

DOORBELL = "doorbell.sock"
MAX_PATH = 100  # sun_path holds 108 bytes


def run_dir(root: str | os.PathLike[str]) -> str:
    """The home's ``run/`` folder (pid file and sockets)."""
    return os.path.join(os.fspath(root), "run")


class SocketAddress:
    """A socket path usable even when longer than ``sun_path`` allows.

    A long path is reached through ``/proc/self/fd/N/NAME``, N being an open descriptor of its
    folder (the socket file is still created in, and protected by, the real folder).
    """

    def __init__(self, folder: str, name: str) -> None:
        self.path = os.path.join(folder, name)
        self._fd: int | None = None
        if len(self.path.encode()) > MAX_PATH:
            self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            self.address = f"/proc/self/fd/{self._fd}/{name}"
        else:
            self.address = self.path

    def close(self) -> None:
        """Close the folder descriptor, if one was opened."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SocketAddress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ring(root: str | os.PathLike[str]) -> None:
    """Wake the Event Manager, if a supervisor runs; never blocks, never fails."""
    try:
        with SocketAddress(run_dir(root), DOORBELL) as addr:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.sendto(b"!", addr.address)
            finally:
                sock.close()
    except OSError:
        pass  # not running, or its queue is full (then it is awake anyway)

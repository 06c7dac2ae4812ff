"""Wake-ups across nodes: a supervisor on PostgreSQL listens for the deliveries other nodes made
due (``LISTEN``), and wakes its lanes at once instead of at their next poll.

Whoever makes deliveries due (:mod:`bridge.eventcore.deliveries`: a new event's deliveries, a retry, the
claims of a dead node) calls :meth:`bridge.store.dialect.Dialect.announce` in its transaction, which on
PostgreSQL is ``NOTIFY ombridge_due``, delivered at the commit. This thread holds one connection
that listens, and calls ``wake`` for each notification (those arriving together, once). Polling
stays the fallback: while the database is away, the thread reconnects with capped backoff, and
the lanes still look for work every ``--poll`` seconds. On SQLite nothing runs here: the one
supervisor's doorbell is rung by the sender itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..store.dialect import WAKE_CHANNEL

log = logging.getLogger("ombridge.wakeups")

LISTEN_SLICE = 1.0  # seconds between two looks at the stop flag while no notification comes
BACKOFF_MAX = 10.0


class Wakeups:
    """The thread that listens for ``NOTIFY ombridge_due`` and calls ``wake``."""

    def __init__(self, connect: Callable[[], Any], wake: Callable[[], None]) -> None:
        self.connect = connect  # () -> a PostgreSQL connection of its own (bridge.store.pgstore)
        self.wake = wake
        self.received = 0
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wakeups", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=LISTEN_SLICE + 5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:  # the database went away: listen again once it is back
                self.connected = False
                failures += 1
                if failures == 1:
                    log.warning("listening for other nodes' wake-ups failed (%s); polling meanwhile", exc)
                self._stop.wait(min(BACKOFF_MAX, 0.5 * 2 ** min(failures, 5)))

    def _listen(self) -> None:
        conn = self.connect()
        try:
            conn.execute(f"LISTEN {WAKE_CHANNEL}")
            self.connected = True
            self.wake()  # what became due while nobody listened
            while not self._stop.is_set():
                got = sum(1 for _ in conn.notifies(timeout=LISTEN_SLICE, stop_after=1))
                if got:
                    self.received += got
                    self.wake()
        finally:
            self.connected = False
            conn.close()


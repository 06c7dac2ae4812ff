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
from collections.abc import Callable

from ..store import Store
from ..store.dialect import WAKE_CHANNEL
from .service import Service

log = logging.getLogger("ombridge.wakeups")

LISTEN_SLICE = 1.0  # seconds between two looks at the stop flag while no notification comes
BACKOFF_MAX = 10.0


class Wakeups(Service):
    """The thread that listens for ``NOTIFY ombridge_due`` and calls ``wake``. Its connection is
    one of its own that listens, not the service's store connection."""

    def __init__(self, store: Store, wake: Callable[[], None]) -> None:
        super().__init__(store, "wakeups", log, "listening for other nodes' wake-ups failed (polling meanwhile)")
        self.wake = wake
        self.received = 0
        self.connected = False

    def stop(self, timeout: float = LISTEN_SLICE + 5) -> None:
        """Stop listening (within one listening slice)."""
        super().stop(timeout)

    def run(self) -> None:
        """Listen until stopped; reconnect with capped backoff while the database is away."""
        failures = 0
        while not self.stopping:
            try:
                self._listen()
                failures = 0
            except Exception as exc:  # the database went away: listen again once it is back
                self.connected = False
                failures += 1
                self.failed(exc)
                self.wait(min(BACKOFF_MAX, 0.5 * 2 ** min(failures, 5)))

    def _listen(self) -> None:
        conn = self.store.connect()  # (one of its own, which listens)
        try:
            conn.execute(f"LISTEN {WAKE_CHANNEL}")
            self.connected = True
            self.answered()
            self.wake()  # what became due while nobody listened
            while not self.stopping:
                got = sum(1 for _ in conn.notifies(timeout=LISTEN_SLICE, stop_after=1))
                if got:
                    self.received += got
                    self.wake()
        finally:
            self.connected = False
            conn.close()

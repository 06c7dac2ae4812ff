"""The supervisor's reports: ``ombacksync/error`` events, stored and delivered in a thread of
their own.

Reporting opens the event core, stores the event and calls its synchronized subscribers, which
may take as long as their timeout. None of that may hold up the supervisor's main loop (signals,
control requests) nor wait behind a lifecycle job (an Init may take minutes), and a slow
subscriber must not hold up a stop: so one small thread does it, one report after the other, in
the order they were made. :meth:`Reporter.close` ends it: a synchronized call still running is
killed (its attempt recorded as failed: the Event Manager tries it again after backoff), and the
reports still queued are stored with their synchronized deliveries handed to the Event Manager.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable

from .. import store
from ..delivery import actions, backsync, sending
from ..errors import BridgeError
from ..home import Home
from ..store import Connection, Store
from .service import Service

log = logging.getLogger("ombridge.supervisor")


class Reporter(Service):
    """Stores and delivers ``ombacksync/error`` events, in order, off the main loop."""

    def __init__(self, home: Home, store: Store, on_stored: Callable[[], None] | None = None) -> None:
        super().__init__(store, "reporter", log, "the ombacksync/error report failed")
        self.home = home
        self.on_stored = on_stored  # wakes the Event Manager
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self.start()

    def report(self, message: str, script: str | None = None) -> None:
        """Queue an ``ombacksync/error`` event about ``script`` (the home's by default); returns at once."""
        self._queue.put((script or str(self.home.script), message))

    def close(self, wait: float = 5.0) -> bool:
        """Store what is queued without waiting for subscribers, end a synchronized call in
        flight, and wait up to ``wait`` seconds for the thread; False if it is still busy."""
        self._stop.set()
        self._queue.put(None)
        deadline = time.monotonic() + wait
        while self._thread.is_alive() and time.monotonic() < deadline:
            # Only the reporter's call can still run: the Event Manager and the listener have
            # stopped before (kill again: a call may have begun after the last look).
            actions.kill_running()
            self._thread.join(0.1)
        return not self._thread.is_alive()

    def run(self) -> None:
        """Store and deliver each report, in order, until :meth:`close`."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.use(lambda conn, i=item: self._store_and_deliver(conn, *i))
                self.answered()
            except (BridgeError, OSError, *store.failures()) as exc:  # a full disk, the database away
                self.failed(exc)
            except Exception:  # a report never takes the supervisor down
                log.exception("could not report the ombacksync error")

    def _store_and_deliver(self, conn: Connection, script: str, message: str) -> None:
        result = backsync.store_error(conn, script, message, on_stored=self.on_stored)
        log.info("ombacksync/error event %s stored", result.event_id)
        if self.stopping:
            sending.hand_over(conn, [result])
        else:
            sending.deliver(conn, [result], cwd=str(self.home.root))

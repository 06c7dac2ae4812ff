"""The one shape of the daemon's background services (the heartbeat, the wake-ups listener):
start and stop, an interruptible wait, a connection to the event core kept through the store's
one reconnect path (:meth:`bridge.store.Store.using`), and one policy for saying an outage
(:class:`bridge.outage.Outage`: once, then once a minute, and its end once).

A service is its :meth:`Service.run` loop, which waits with :meth:`Service.wait` (False once
stopping), works with :meth:`Service.use`, and tells :meth:`Service.failed` /
:meth:`Service.answered` how the store answered.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..outage import Outage
from ..store import Store


class Service:
    """A thread of the daemon with a stop flag, a store connection and an outage log."""

    def __init__(self, store: Store, name: str, log: logging.Logger, what: str) -> None:
        self.store = store  # the process's one Store
        self.name = name
        self.conn: Any = None  # the service's own connection (None until first used)
        self.last_error: str | None = None  # what failed last, while it still fails (status shows it)
        self.outage = Outage(log, what)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        """Start the service's thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end, and wait for it up to ``timeout`` seconds."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less when stopping; False once the service is stopping."""
        return not self._stop.wait(seconds)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was asked."""
        return self._stop.is_set()

    def use(self, work: Any) -> Any:
        """``work(conn)`` on the service's connection, a new one when the database restarted."""
        self.conn, result = self.store.using(self.conn, work)
        return result

    def failed(self, exc: BaseException) -> None:
        """The store (or what the service serves) failed: remembered, and said as an outage says."""
        self.last_error = " ".join(str(exc).split())
        self.outage.failed(self.last_error)

    def answered(self) -> None:
        """It works again (or still does)."""
        self.last_error = None
        self.outage.recovered()

    def run(self) -> None:
        """The service's loop (each service's own)."""
        raise NotImplementedError

    def _main(self) -> None:
        try:
            self.run()
        finally:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

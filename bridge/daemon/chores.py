"""The supervisor's periodic chores: WAL checkpoints, pruning, the metrics textfile.

The main loop asks :meth:`Chores.start_due` once per turn; what is due runs in a thread of its
own (never two at once), so a slow prune never holds up a signal or a control request. Each
chore fails on its own (a full disk stops none of the others) and is logged once a minute at
most: the checkpoint runs every second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import store
from ..errors import BridgeError
from ..eventcore import metrics, retention
from ..home import Home
from ..store import Connection

log = logging.getLogger("ombridge.supervisor")
PRUNE_EVERY = 3600.0
PRUNE_FIRST = 60.0  # seconds after the start: not while the start is busy
CHECKPOINT_EVERY = 1.0  # seconds between two WAL checkpoints (the lanes' commits make none)
LOG_FAILURE_EVERY = 60.0


class Chores:
    """When each chore is due next, and the thread that runs the due ones."""

    def __init__(self, home: Home, *, retention_seconds: float | None, metrics_textfile: str | None,
                 metrics_interval: float, status: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        self.retention = retention_seconds  # None or 0: keep everything
        self.metrics_textfile = metrics_textfile
        self.metrics_interval = metrics_interval
        self.status = status  # the supervisor's status, for the metrics textfile
        self.clock = clock
        start = clock()
        self.next_at: dict[str, float] = {"prune": start + PRUNE_FIRST, "metrics": start, "checkpoint": start}
        self.running = threading.Lock()
        self.conn: Any = None  # the chores' connection, kept from one run to the next
        self.next_log: dict[str, float] = {}  # chore -> when its next failure may be logged

    def due(self) -> list[str]:
        """The chores due now, each scheduled for its next time."""
        clock = self.clock()
        every = {"checkpoint": CHECKPOINT_EVERY, "prune": PRUNE_EVERY if self.retention else None,
                 "metrics": self.metrics_interval if self.metrics_textfile else None}
        found = []
        for chore, interval in every.items():
            if interval is not None and chore in self.next_at and clock >= self.next_at[chore]:
                found.append(chore)
                self.next_at[chore] = clock + interval
        return found

    def start_due(self) -> None:
        """Start a thread for the chores due now, unless the last ones still run (they are
        then tried again at their next time)."""
        due = self.due()
        if due and self.running.acquire(blocking=False):
            threading.Thread(target=self.run, args=(due,), name="chores", daemon=True).start()

    def run(self, due: list[str]) -> None:
        """Run ``due`` chores, one after the other, then release :attr:`running` (held by the
        caller). One connection serves every run (runs never overlap), a new one only when the
        database restarted (:func:`bridge.store.using`)."""
        try:
            for chore in due:  # one failing (a full disk) does not keep the others from running
                try:
                    self.conn, _ = store.using(self.home, self.conn, lambda conn, c=chore: self._run_one(conn, c))
                except (BridgeError, OSError, *store.failures()) as exc:  # a full disk, the database away
                    self.failed(chore, exc)
                except Exception:  # a chore never takes the supervisor down
                    log.exception("periodic %s failed", chore)
        finally:
            self.running.release()

    def close(self) -> None:
        """Close the chores' connection (the supervisor's stop, once no run is left)."""
        with self.running:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def _run_one(self, conn: Connection, chore: str) -> None:
        if chore == "checkpoint":
            if conn.dialect.checkpoints:
                store.checkpoint(conn)
            else:  # (PostgreSQL checkpoints itself: no chore, no connection a second for it)
                self.next_at.pop("checkpoint", None)
        elif chore == "prune" and self.retention:
            counts = retention.prune(conn, self.retention)
            if any(counts.values()):
                log.info("pruned %(deliveries)d deliveries, %(attempts)d attempts, %(events)d events", counts)
        elif chore == "metrics" and self.metrics_textfile:
            metrics.write_textfile(self.metrics_textfile, metrics.render(conn, self.status()))

    def failed(self, chore: str, exc: BaseException) -> None:
        """Log a chore's failure, once a minute per chore at most."""
        clock = self.clock()
        if clock >= self.next_log.get(chore, 0.0):
            self.next_log[chore] = clock + LOG_FAILURE_EVERY
            log.error("periodic %s failed: %s", chore, exc)

"""The supervisor's periodic chores: WAL checkpoints, pruning, the metrics textfile.

A service of the daemon (:class:`bridge.daemon.service.Service`): one thread that sleeps until the
next chore is due and runs what is due, one chore after the other, on one connection kept through
the store's reconnect path, so a slow prune never holds up a signal or a control request. Each
chore fails on its own (a full disk stops none of the others) and says its outage as every
service does (:class:`bridge.outage.Outage`, once, then once a minute): the checkpoint runs every
second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .. import store
from ..errors import BridgeError
from ..eventcore import metrics, retention
from ..outage import Outage
from ..store import Connection, Store
from .service import Service

log = logging.getLogger("ombridge.supervisor")
PRUNE_EVERY = 3600.0
PRUNE_FIRST = 60.0  # seconds after the start: not while the start is busy
CHECKPOINT_EVERY = 1.0  # seconds between two WAL checkpoints (the lanes' commits make none)
CHORES = ("checkpoint", "prune", "metrics")


class Chores(Service):
    """When each chore is due next, and the thread that runs the due ones."""

    def __init__(self, store: Store, *, retention_seconds: float | None, metrics_textfile: str | None,
                 metrics_interval: float, status: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(store, "chores", log, "the periodic chores")
        self.retention = retention_seconds  # None or 0: keep everything
        self.metrics_textfile = metrics_textfile
        self.metrics_interval = metrics_interval
        self.status = status  # the supervisor's status, for the metrics textfile
        self.clock = clock
        start = clock()
        self.next_at: dict[str, float] = {"prune": start + PRUNE_FIRST, "metrics": start, "checkpoint": start}
        self.outages = {chore: Outage(log, f"periodic {chore} failed", clock) for chore in CHORES}

    def due(self) -> list[str]:
        """The chores due now, each scheduled for its next time."""
        clock = self.clock()
        found = []
        for chore, interval in self._every().items():
            if interval is not None and chore in self.next_at and clock >= self.next_at[chore]:
                found.append(chore)
                self.next_at[chore] = clock + interval
        return found

    def _every(self) -> dict[str, float | None]:
        return {"checkpoint": CHECKPOINT_EVERY, "prune": PRUNE_EVERY if self.retention else None,
                "metrics": self.metrics_interval if self.metrics_textfile else None}

    def run(self) -> None:
        """Sleep until the next chore is due, run what is due, until stopped."""
        while True:
            every = self._every()
            upcoming = [at for chore, at in self.next_at.items() if every[chore] is not None]
            if not self.wait(max(0.0, min(upcoming) - self.clock()) if upcoming else 3600.0):
                return
            self.run_due(self.due())

    def run_due(self, due: list[str]) -> None:
        """Run ``due`` chores, one after the other, on the service's connection."""
        for chore in due:  # one failing (a full disk) does not keep the others from running
            try:
                self.use(lambda conn, c=chore: self._run_one(conn, c))
                self.outages[chore].recovered()
            except (BridgeError, OSError, *store.failures()) as exc:  # a full disk, the database away
                self.outages[chore].failed(str(exc))
            except Exception:  # a chore never takes the supervisor down
                log.exception("periodic %s failed", chore)

    def _run_one(self, conn: Connection, chore: str) -> None:
        if chore == "checkpoint":
            if self.store.checkpoints:
                store.checkpoint(conn)
            else:  # (PostgreSQL checkpoints itself: no chore, no connection a second for it)
                self.next_at.pop("checkpoint", None)
        elif chore == "prune" and self.retention:
            counts = retention.prune(conn, self.retention)
            if any(counts.values()):
                log.info("pruned %(deliveries)d deliveries, %(attempts)d attempts, %(events)d events", counts)
        elif chore == "metrics" and self.metrics_textfile:
            metrics.write_textfile(self.metrics_textfile, metrics.render(conn, self.status()))

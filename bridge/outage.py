"""One way of saying that the event core is away: once, not once per request.

A service that fails because the store cannot be used (the database restarting, a full disk)
tells :class:`Outage` of each failure and of each success. The first failure is logged at ERROR
with its reason; while the outage lasts, it is said again at most once a minute, with the reason
of the moment and how many failures there were meanwhile; the first success after it is logged
once, with the count and how long it lasted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_EVERY = 60.0  # seconds between two lines about one outage


class Outage:
    """The outage log of one service (``what`` names it in every line)."""

    def __init__(self, log: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.clock = clock
        self.began: float | None = None  # when the current outage began (None: no outage)
        self.failures = 0  # in the current outage
        self._said = (0.0, 0)  # (when the outage was last said, how many failures then)

    def failed(self, reason: str) -> None:
        """One failure: said when it begins an outage, then at most once a minute (the reason of
        the moment: it changes as a database goes down, restarts and comes back)."""
        reason = " ".join(reason.split())
        now = self.clock()
        if self.began is None:
            self.began, self.failures = now, 1
            self.log.error("%s: %s", self.what, reason)
        else:
            self.failures += 1
            said_at, said_failures = self._said
            if now - said_at < REPEAT_EVERY:
                return
            self.log.error("%s: still failing: %s (%d more since the last line, %d in all)", self.what, reason,
                           self.failures - said_failures, self.failures)
        self._said = (now, self.failures)

    def recovered(self) -> None:
        """A success: ends the outage, if any, in one line."""
        if self.began is None:
            return
        self.log.warning("%s: the event core answers again after %.0fs (%d failure(s) meanwhile)", self.what,
                         self.clock() - self.began, self.failures)
        self.began = None

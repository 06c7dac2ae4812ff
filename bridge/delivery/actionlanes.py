"""The action lanes' step: claim one due command/program/web (or sync back) delivery, run it,
record the attempt (:mod:`bridge.delivery.manager` runs it in each action lane and in the OMi
lane); the shares of the action lanes each subscriber may hold; the log line of a settled attempt
(the backsync lane's too)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from ..eventcore import deliveries
from ..model import Attempt, Lane, Settlement
from ..names import value_text
from ..store import Connection
from .actions import Performer, perform

log = logging.getLogger("ombridge.manager")

Counter = Callable[[int, int], None]  # (succeeded, failed)


def log_settled(c: deliveries.Claimed, result: Attempt, settled: Settlement) -> None:
    """One log line for one recorded attempt (a line per success on the action lanes only)."""
    if result.ok:
        log.info("delivery %d (event %d, subscriber %d, attempt %d): %s", c.id, c.event.id, c.subscriber_id,
                 c.attempt, settled.value)
        return
    level = logging.ERROR if settled is Settlement.FAILED else logging.WARNING
    close_id = f", ID {value_text(c.event.key['ID'])!r}" if "ID" in c.event.key else ""
    log.log(level, "delivery %d (event %d%s, subscriber %d, attempt %d) %s: %s", c.id, c.event.id, close_id,
            c.subscriber_id, c.attempt,
            "failed, retries used up" if settled is Settlement.FAILED else "failed, will retry"
            if settled is Settlement.RETRY else settled.value, result.error)


class Shares:
    """How many action lanes each subscriber holds on this node. A subscriber holding ``limit``
    is skipped by the next claim, so that one slow destination never takes every lane: another
    subscriber's delivery always finds a free one while the slow one is at its share."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    def claim(self, conn: Connection, lane: Lane, owner: str) -> deliveries.Claimed | None:
        """Claim one due delivery of ``lane`` whose subscriber is below its share, and count it held."""
        with self._lock:  # (claims of the action lanes take turns: two never both take the last share)
            skip = [s for s, n in self._held.items() if n >= self.limit]
            claims = deliveries.claim(conn, limit=1, lane=lane, owner=owner, skip=skip)
            if claims:
                sid = claims[0].subscriber_id
                self._held[sid] = self._held.get(sid, 0) + 1
        return claims[0] if claims else None

    def release(self, subscriber_id: int) -> None:
        with self._lock:
            left = self._held.get(subscriber_id, 0) - 1
            if left > 0:
                self._held[subscriber_id] = left
            else:
                self._held.pop(subscriber_id, None)

    def held(self) -> dict[int, int]:
        """Subscriber id -> the action lanes it holds now."""
        with self._lock:
            return dict(self._held)


def step_actions(conn: Connection, owner: str, cwd: str, count: Counter,
                 others: Mapping[str, Performer] | None = None, *, shares: Shares | None = None,
                 lane: Lane = Lane.ACTIONS) -> int:
    """Claim and deliver one due command/program/web (or ``others``') delivery of ``lane``;
    returns how many (0 or 1). With ``shares``, no subscriber holds more than its share."""
    if shares is not None:
        c = shares.claim(conn, lane, owner)
    else:
        claims = deliveries.claim(conn, limit=1, lane=lane, owner=owner)
        c = claims[0] if claims else None
    if c is None:
        return 0
    try:
        result = perform(c.action, c.target, c.event, c.timeout, cwd, c.headers, others)
    finally:
        if shares is not None:
            shares.release(c.subscriber_id)
    settled = deliveries.finish(conn, [(c, result)])[0]
    count(int(result.ok), int(not result.ok))
    log_settled(c, result, settled)
    return 1

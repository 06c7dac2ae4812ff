"""The node's heartbeat: a service of the daemon that keeps this node alive in the ``nodes``
table every :data:`~bridge.eventcore.nodes.HEARTBEAT_EVERY` seconds (from a thread of its own:
a busy chore or lane never makes it look dead) and takes over the claims of the nodes it finds
dead (:func:`bridge.eventcore.nodes.beat`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..eventcore.nodes import DEAD_AFTER, HEARTBEAT_EVERY, Node, NodeReplaced, beat
from ..store import Store
from .service import Service

log = logging.getLogger("ombridge.nodes")


class Heartbeat(Service):
    """The thread that keeps this node alive in the table and takes over dead nodes' claims."""

    def __init__(self, store: Store, me: Node, checksum: Callable[[], str | None],
                 on_taken: Any = None, every: float = HEARTBEAT_EVERY, on_replaced: Any = None) -> None:
        super().__init__(store, "heartbeat", log, f"the heartbeat of node {me.name} failed")
        self.me = me
        self.checksum = checksum  # of the script the node's perl loaded (None: none loaded)
        self.on_taken = on_taken  # called after claims were taken over (wake the lanes)
        self.on_replaced = on_replaced  # called once with the sentence when another home took the name
        self.every = every

    def run(self) -> None:
        """Beat every :attr:`every` seconds until stopped, or until another home took the name."""
        while self.wait(self.every):
            try:
                taken = self.use(lambda conn: beat(conn, self.me, self.checksum()))
                self.answered()
            except NodeReplaced as exc:
                self.last_error = str(exc)
                log.error("%s", exc)
                if self.on_replaced:
                    self.on_replaced(str(exc))
                return  # (the row is the other home's now: never written again from here)
            except Exception as exc:  # the database away: beat again, reconnected, next time
                self.failed(exc)
                continue
            for name, count in taken.items():
                log.warning("node %s is dead (no heartbeat for %gs): %d of its claims are due again here",
                            name, DEAD_AFTER, count)
            if taken and self.on_taken:
                self.on_taken()

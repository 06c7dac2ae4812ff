"""The stored backlog and nodes of a home, read for ``status`` by the supervisor and by the client
when no supervisor runs (:mod:`bridge.client.launcher`): a module of its own so that the client needs
nothing of the daemon."""

from __future__ import annotations

from typing import Any

from .. import conf
from ..errors import BridgeError
from ..home import Home
from ..store import Store, failures
from . import catalog, ledger, nodes, pauses


def stored_backlog(home: Home, store: Store | None = None) -> tuple[dict[str, int] | None, list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """(open and failed deliveries, the nodes, what is wrong in words, the paused subscribers)
    from the event core, or (None, [], [why it cannot be read], []). What is wrong: a disabled
    system subscriber (its events are refused), dead nodes, scripts that differ between nodes. A
    pause is not: an operator chose it, and status says it on a line of its own. ``store``: the
    process's (:class:`bridge.store.Store`; a new one for a process that has none)."""
    settings = conf.problem(home.root)  # (a broken file is said as such, not only as "cannot be read")
    said = [settings] if settings else []
    try:
        with (store or Store(home)).lend() as conn:
            listing = nodes.listing(conn)
            troubles = said + disabled_system(conn) + nodes.troubles(listing)
            return ledger.backlog(conn), listing, troubles, pauses.listing(conn)
    except (BridgeError, *failures()) as exc:
        return None, [], said or [f"the event core cannot be read: {exc}"], []


def disabled_system(conn: Any) -> list[str]:
    """A sentence for each disabled system subscriber: what it refuses, and how to enable it."""
    said = []
    for sid, action in catalog.disabled_system(conn):
        what = {"backsync": "closes are refused (OMi is answered 503, `close` fails)",
                "omi": "changes for OMi are refused (`omi close` fails)"}.get(action, "its events are refused")
        said.append(f"the {action} subscriber ({sid}) is disabled: {what}; `ombridge subscriber enable {sid}`")
    return said

"""The stored backlog and nodes of a home, read for ``status`` by the supervisor and by the client
when no supervisor runs (:mod:`bridge.launcher`): a module of its own so that the client needs
nothing of the daemon."""

from __future__ import annotations

from typing import Any

from . import dialect, ledger, nodes, store
from .errors import BridgeError
from .home import Home


def stored_backlog(home: Home) -> tuple[dict[str, int] | None, list[dict[str, Any]], str | None]:
    """(open and failed deliveries, the nodes, None) from the event core, or (None, [], why it
    cannot be read)."""
    try:
        conn = store.connect(home)
        try:
            return ledger.backlog(conn), nodes.listing(conn), None
        finally:
            conn.close()
    except (BridgeError, *dialect.errors()) as exc:
        return None, [], str(exc)

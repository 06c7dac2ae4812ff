"""The stored backlog of a home, read for ``status`` by the supervisor and by the client when no
supervisor runs (:mod:`bridge.launcher`): a module of its own so that the client needs nothing
of the daemon."""

from __future__ import annotations

from . import dialect, ledger, store
from .errors import BridgeError
from .home import Home


def stored_backlog(home: Home) -> tuple[dict[str, int] | None, str | None]:
    """(open and failed deliveries, None) from the event core, or (None, why it cannot be read)."""
    try:
        conn = store.connect(home)
        try:
            return ledger.backlog(conn), None
        finally:
            conn.close()
    except (BridgeError, *dialect.errors()) as exc:
        return None, str(exc)

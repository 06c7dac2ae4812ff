"""What the store raises when it cannot do what it was asked, for everything above the seam.

Above ``bridge/store/`` nobody names a driver's exception: ``except store.failures()`` catches a
store that failed (:class:`~bridge.errors.StoreError` and the loaded drivers' errors: the
database away, a full disk, a damaged file), :func:`unreachable` the subset that means "cannot be
reached now, try again", and :func:`describe` says any of them in one sentence for an operator.
"""

from __future__ import annotations

import sqlite3

from ..errors import StoreError, StoreUnavailable
from . import dialect


def failures() -> tuple[type[BaseException], ...]:
    """Every exception that means "the store failed" (``except store.failures() as exc:``)."""
    return (StoreError, *dialect.errors())


def unreachable() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the database cannot be reached now" (a server that went away or
    restarted; never on SQLite): a new connection may succeed."""
    return (StoreUnavailable, *dialect.unavailable())


def describe(exc: BaseException) -> str | None:
    """One sentence for a failure of the store that reached an operator (a full disk, a
    read-only home, a damaged event core, a database that went away); None when ``exc`` is no
    failure of the store's."""
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "full" in text:
            return "the disk holding the event core is full: nothing was stored; free some space and try again"
        if "readonly" in text or "read-only" in text:
            return "the event core is read-only (check the owner and mode of the home's datafiles/)"
        if "malformed" in text or "not a database" in text:
            return ("the event core is damaged (" + text + "): `ombridge check --db` tells more; "
                    "docs/operations.md has the recovery procedure")
        if "unable to open" in text:
            return "the event core cannot be opened (check that the home's datafiles/ exists and is writable)"
        return f"the event core failed: {text}"
    if isinstance(exc, dialect.unavailable()):  # PostgreSQL: the server went away mid-command
        return f"the event core's database cannot be reached ({' '.join(str(exc).split())}): try again"
    if isinstance(exc, dialect.errors()):
        return f"the event core failed: {' '.join(str(exc).split())}"
    return None

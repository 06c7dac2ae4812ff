"""Retention: done deliveries, their attempts and finished events older than an age go away.

Open and failed deliveries are never pruned, nor the events they belong to. Deletes run in small
transactions, so a prune never holds the write lock for long while sends and deliveries go on.
"""

from __future__ import annotations

import re

from ..errors import UsageError
from ..store import Connection, now
from . import deliveries, events

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
CHUNK = 5000


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (or plain seconds) -> seconds."""
    m = _AGE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"bad age {text!r}: use a number with s, m, h, d or w, e.g. 7d")
    return float(m[1]) * _UNITS[m[2]]


def prune(conn: Connection, older_than: float, at: float | None = None) -> dict[str, int]:
    """Delete done and purged deliveries (with their attempts) last changed more than
    ``older_than`` seconds ago, then events older than that with no delivery left."""
    cutoff = (now(conn) if at is None else at) - older_than
    counts = {"deliveries": 0, "attempts": 0, "events": 0}
    while True:
        gone, attempts = deliveries.prune(conn, cutoff, CHUNK)
        counts["deliveries"] += gone
        counts["attempts"] += attempts
        if not gone:
            break
    while True:
        gone = events.prune(conn, cutoff, CHUNK)
        counts["events"] += gone
        if gone < CHUNK:
            break
    return counts

"""How results read for an operator, shared by the command line and the console: times, counts,
the answer of a restart, the Event Manager's figures and a delivery's attempt history in words.

The command line's own concerns (error sentences, exit codes) stay in :mod:`bridge.cli.report`;
nothing here prints. Kept light to import: the CLI's listings use :func:`when`.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def when(ts: float | None) -> str:
    """A stored time as local ``YYYY-MM-DD HH:MM:SS`` (empty for none), as listings show it."""
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def clock(ts: float) -> str:
    """A time of today as ``HH:MM`` (the chart's table)."""
    return time.strftime("%H:%M", time.localtime(ts))


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 attempt``, ``2 attempts`` (``many`` when the plural is not ``word + 's'``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def duration(seconds: float | None) -> str:
    """A span as an operator says it: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def restarted(what: str, result: dict[str, Any]) -> str:
    """What a restart answers (``ombridge restart`` and the console's buttons alike)."""
    ob = result.get("ombacksync", {})
    return f"{what} restarted; ombacksync {ob.get('state', 'unknown')}" + (f" (pid {ob['pid']})" if ob.get("pid") else "")


def paused_since(paused_at: float | None, paused_by: str | None) -> str:
    """A pause in words: ``paused since 2024-05-01 10:02:03 by local user alice on host-a (command
    line)`` (empty for a subscriber that runs)."""
    return "" if paused_at is None else f"paused since {when(paused_at)} by {paused_by}"


def pause_answer(change: Any) -> str:
    """What ``subscriber pause`` / ``resume`` answer (a :class:`bridge.eventcore.pauses.PauseChange`),
    the command line and the console alike."""
    sid, held = change.subscriber_id, plural(change.open, "open delivery", "open deliveries")
    if change.paused_at is not None and not change.changed:
        return f"subscriber {sid} is already {paused_since(change.paused_at, change.paused_by)}: nothing changed"
    if change.paused_at is None and not change.changed:
        return f"subscriber {sid} is not paused: nothing changed"
    if change.paused_at is None:
        return f"subscriber {sid} ({change.action}) resumed: " + (
            f"its {held} run now, oldest first" if change.open else "nothing was waiting")
    flying = f"; {change.in_flight} already running will finish" if change.in_flight else ""
    return (f"subscriber {sid} ({change.action}) paused on every node: its deliveries are stored and wait until "
            f"`ombridge subscriber resume {sid}` ({held} now{flying})")


def eventmanager_facts(em: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The Event Manager's figures of ``status`` as (label, value, the status field it shows), in
    words: ``poll_seconds`` reads "looks for due work every 1 s"."""
    facts = []
    if em.get("workers") is not None:
        facts.append(("action lanes", str(em["workers"]), "workers"))
    if em.get("poll_seconds") is not None:
        facts.append(("looks for due work every", f"{em['poll_seconds']:g} s", "poll_seconds"))
    if em.get("delivered") is not None:
        facts.append(("delivered since start", str(em["delivered"]), "delivered"))
    if em.get("failed_attempts") is not None:
        facts.append(("failed attempts since start", str(em["failed_attempts"]), "failed_attempts"))
    if em.get("last_error"):
        facts.append(("last error", f"{em['last_error']} ({when(em.get('last_error_at'))})", "last_error"))
    return facts


def attempt_rounds(attempts: list[dict[str, Any]]) -> int:
    """How many rounds the (time-ordered) attempts of one delivery ran in: a retry of a failed
    delivery starts a new one."""
    return max((a["round"] for a in attempts), default=0)


def _calls_a_url(action: str) -> bool:
    """Whether an action's status is an HTTP status: a web call, the sync back to OMi's gateway."""
    from .model import ActionKind

    return action in (ActionKind.WEB, ActionKind.OMI)


def status_name(action: str) -> str:
    """What an attempt's status number is: ``HTTP status`` or ``exit status``."""
    return "HTTP status" if _calls_a_url(action) else "exit status"


def attempt_status(action: str, exit_status: int | None) -> str:
    """An attempt's status in words: ``HTTP 401``, ``exit status 7``; "" when it has none."""
    if exit_status is None:
        return ""
    return f"HTTP {exit_status}" if _calls_a_url(action) else f"exit status {exit_status}"


def history_header(delivery: dict[str, Any]) -> str:
    """A delivery's state and what its history lists: ``failed, 4 attempts in 2 rounds (retried
    once), 1 retry allowed per round``."""
    log = delivery["attempt_log"]
    rounds = attempt_rounds(log)
    text = f"{delivery['status']}, {plural(len(log), 'attempt')}"
    if rounds > 1:
        retried = "once" if rounds == 2 else f"{rounds - 1} times"
        text += f" in {rounds} rounds (retried {retried})"
    return text + f", {plural(delivery['retries'], 'retry', 'retries')} allowed per round"

"""Prometheus text format: what the event core holds, and the supervisor's live figures.

``ombridge metrics`` prints it; ``--textfile PATH`` writes it atomically for node_exporter's
textfile collector; the supervisor can refresh such a file periodically.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ..model import DeliveryStatus, HostState
from ..store import Connection, now
from . import ledger, pauses


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        lines.append(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}")


def render(conn: Connection, status: dict[str, Any] | None) -> str:
    """The metrics text; ``status`` is the supervisor's (None when it is not running)."""
    by_status = ledger.counts(conn)
    oldest = ledger.oldest_open(conn)
    attempts = ledger.attempt_totals(conn)
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    lines: list[str] = []
    _metric(lines, "ombridge_up", "gauge", "1 when the supervisor answers.", [("", int(status is not None))])
    _metric(lines, "ombridge_deliveries", "gauge", "Subscriber events stored, by status.",
            [(f'{{status="{s}"}}', n) for s, n in by_status.items()])
    _metric(lines, "ombridge_backlog_open", "gauge", "Deliveries still to make.", [("", by_status[DeliveryStatus.OPEN.value])])
    _metric(lines, "ombridge_oldest_open_age_seconds", "gauge", "Age of the oldest open delivery (0 when none).",
            [("", round(now(conn) - oldest, 3) if oldest else 0.0)])
    _metric(lines, "ombridge_attempts", "gauge", "Delivery attempts stored, by result.",
            [('{result="ok"}', attempts[True]), ('{result="failed"}', attempts[False])])
    _metric(lines, "ombridge_events", "gauge", "Events stored.", [("", events)])
    subscribers = pauses.states(conn)
    _metric(lines, "ombridge_subscriber_paused", "gauge", "1 while the subscriber is paused (its deliveries wait).",
            [(f'{{subscriber="{sid}",action="{action}"}}', int(at is not None)) for sid, action, at in subscribers])
    _metric(lines, "ombridge_subscriber_paused_since_seconds", "gauge", "When a paused subscriber was paused "
            "(Unix time).", [(f'{{subscriber="{sid}",action="{action}"}}', int(at)) for sid, action, at in subscribers
                             if at is not None])
    if status is not None:
        ob, em = status["ombacksync"], status["eventmanager"]
        _metric(lines, "ombridge_ombacksync_state", "gauge", "1 for ombacksync's current state.",
                [(f'{{state="{s.value}"}}', int(ob["state"] == s.value)) for s in HostState])
        _metric(lines, "ombridge_perl_restarts_total", "counter", "Restarts of the perl child after a fault, "
                "since the supervisor started.", [("", ob["restarts"])])
        children = ob.get("children") or []
        _metric(lines, "ombridge_ombacksync_child_up", "gauge", "1 while that perl child runs ([ombacksync] children).",
                [(f'{{child="{c["index"]}"}}', int(c["state"] == HostState.RUNNING.value)) for c in children])
        _metric(lines, "ombridge_ombacksync_child_closes_total", "counter", "Closes that perl child ran, since the "
                "supervisor started.", [(f'{{child="{c["index"]}"}}', c["closes"]) for c in children])
        _metric(lines, "ombridge_ombacksync_child_busy_seconds", "gauge", "How long that child has been on its "
                "current Close (0 when idle).", [(f'{{child="{c["index"]}"}}', round(c["current"]["seconds"], 3)
                                                  if c["current"] else 0.0) for c in children])
        _metric(lines, "ombridge_delivered_total", "counter", "Deliveries made since the supervisor started.",
                [("", em["delivered"])])
        _metric(lines, "ombridge_failed_attempts_total", "counter", "Failed attempts since the supervisor started.",
                [("", em["failed_attempts"])])
        web = status.get("listener", {})
        if web.get("state", "off") != "off":
            _metric(lines, "ombridge_http_requests_total", "counter", "HTTP requests answered, by status code.",
                    [(f'{{code="{code}"}}', n) for code, n in web["by_status"].items()])
            _metric(lines, "ombridge_http_auth_failures_total", "counter", "Requests refused for bad credentials.",
                    [("", web["auth_failures"])])
            _metric(lines, "ombridge_http_events_total", "counter", "Events stored from HTTP requests.",
                    [("", web["events"])])
            _metric(lines, "ombridge_http_commits_total", "counter", "Transactions that stored them (group commit).",
                    [("", web["commits"])])
            if web.get("processes"):  # (a process started again counts from 0: a counter reset)
                _metric(lines, "ombridge_http_listener_processes", "gauge", "Listener processes serving now, of "
                        "listen.processes.", [("", web["serving"])])
    return "\n".join(lines) + "\n"


def write_textfile(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ombridge-metrics.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

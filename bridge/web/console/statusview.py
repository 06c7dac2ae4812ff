"""The status page's figures and tables, built from ``ombridge status --json`` (and the backlog of
each subscriber) in one place: the page renders them, and its live refresh reads the very same
structure from the JSON twin (``view``), so what a reload shows and what the refresh shows
cannot drift apart.

A table is ``{"rows": [{"cells": [cell, ...], "class": ...}, ...], "shown": bool}``; a cell is
``{"text": ...}`` with an optional ``href`` (a console path built here from numbers) and ``alarm`` (shown in red). The page
sets text only (``textContent``): nothing from the status becomes markup.
"""

from __future__ import annotations

from typing import Any

from ...eventcore.builtins import display_name
from ...eventcore.nodes import short_checksum
from ...model import DeliveryStatus, HostState, LaneState, NodeState
from ...wording import duration

OPEN, FAILED = DeliveryStatus.OPEN.value, DeliveryStatus.FAILED.value
CLOCK_ALARM = 5.0  # seconds a node's clock may be off before it is shown in red


def cell(text: Any, href: str | None = None, alarm: bool = False) -> dict[str, Any]:
    """One table cell."""
    out: dict[str, Any] = {"text": "" if text is None else str(text)}
    if href:
        out["href"] = href
    if alarm:
        out["alarm"] = True
    return out


def row(*cells: dict[str, Any], cls: str = "") -> dict[str, Any]:
    """One table row (``cls``: its class, e.g. ``node-dead``)."""
    return {"cells": list(cells), "class": cls}


def headline(st: dict[str, Any]) -> dict[str, Any]:
    """The counters at the top, as in Sidekiq's dashboard: processed and failed (attempts since
    the supervisor started), busy (lanes delivering now), enqueued (open deliveries), dead
    (failed deliveries whose retries are used up)."""
    em, backlog = st.get("eventmanager") or {}, st.get("backlog") or {}
    lanes = em.get("lanes") or []
    return {"processed": em.get("delivered"), FAILED: em.get("failed_attempts"),
            "busy": sum(1 for lane in lanes if lane.get("state") == LaneState.BUSY.value) if lanes else None,
            "enqueued": backlog.get(OPEN), "dead": backlog.get(FAILED)}


def lanes(st: dict[str, Any]) -> dict[str, Any]:
    """The Event Manager's lanes: each busy or idle now."""
    rows = [row(cell(lane.get("name", n + 1)), cell(lane.get("state", "")))
            for n, lane in enumerate((st.get("eventmanager") or {}).get("lanes") or [])]
    return {"rows": rows, "shown": bool(rows)}


def children(st: dict[str, Any], now: float) -> dict[str, Any]:
    """ombacksync's perl children: one row each (``children``, several children), or the one child
    of a host that reports only its own fields."""
    host = st.get("ombacksync") or {}
    found = host.get("children")
    if found is None:
        found = [{"index": 1, "pid": host.get("pid"), "state": host.get("state", ""), "closes": host.get("closes"),
                  "current": host.get("current")}]
    rows = []
    for child in found:
        current = child.get("current") or None
        doing = ""
        if current:
            since = current.get("since")
            doing = f"{current.get('id', '')}" + (f" (for {duration(max(0.0, now - since))})" if since else "")
        rows.append(row(cell(child.get("index")), cell(child.get("pid") or ""), cell(child.get("state", ""),
                        alarm=child.get("state") not in (HostState.RUNNING.value, HostState.STARTING.value, None)),
                        cell("" if child.get("closes") is None else child["closes"]), cell(doing)))
    return {"rows": rows, "shown": bool(rows)}


def nodes(st: dict[str, Any]) -> dict[str, Any]:
    """The nodes sharing the event core (shown when there is more than one)."""
    rows = []
    for n in st.get("nodes") or []:
        offset = n.get("clock_offset") or 0.0
        rows.append(row(cell(n.get("name")), cell(n.get("state"), alarm=n.get("state") == NodeState.DEAD.value),
                        cell(f"{duration(n.get('seen_ago') or 0.0)} ago"), cell(n.get("leases", 0)),
                        cell(f"{n.get('host', '')}, {n.get('pid', '')}"), cell(n.get("version", "")),
                        cell(f"{offset:+.1f} s", alarm=abs(offset) > CLOCK_ALARM),
                        cell(short_checksum(n.get("script_checksum"))), cls=f"node-{n.get('state')}"))
    return {"rows": rows, "shown": len(rows) > 1}


def backlog(per_subscriber: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Open and failed deliveries of each subscriber that has any (None: the event core cannot
    be read now)."""
    if per_subscriber is None:
        return {"rows": [row(cell("unknown: the event core cannot be read"), cell(""), cell(""))], "shown": True}
    rows = [row(cell(f"{s['id']}: {display_name(s)}", f"/ui/subscribers/{int(s['id'])}"),
                cell(s[OPEN], f"/ui/deliveries?status={OPEN}&subscriber={int(s['id'])}"),
                cell(s[FAILED], f"/ui/deliveries?status={FAILED}&subscriber={int(s['id'])}", alarm=s[FAILED] > 0))
            for s in per_subscriber if s[OPEN] or s[FAILED]]
    return {"rows": rows or [row(cell("nothing open or failed"), cell(""), cell(""))], "shown": True}


def view(st: dict[str, Any], per_subscriber: list[dict[str, Any]] | None, now: float) -> dict[str, Any]:
    """Everything the status page shows beyond the plain fields of ``status``."""
    return {"headline": headline(st),
            "tables": {"lanes": lanes(st), "children": children(st, now), "nodes": nodes(st),
                       "backlog": backlog(per_subscriber)}}

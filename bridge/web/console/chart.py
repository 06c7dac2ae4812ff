"""The status page's chart as server-rendered SVG: attempts per minute and the backlog over the
last hour or 24 hours, and the same numbers as a table (a row per twelfth of the window).

Input is :func:`bridge.eventcore.ledger.activity`; output is a small self-contained SVG (a few paths,
no script). Every text in it is a number or a time formatted here, escaped all the same.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

WIDTH, PANEL, GAP, LEFT, RIGHT, TOP = 960, 110, 34, 52, 12, 22
DONE_COLOUR, FAILED_COLOUR, BACKLOG_COLOUR = "#2e7d32", "#c62828", "#1565c0"


def _nice_max(value: float) -> float:
    """The next round number above ``value`` (an axis' top)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _path(values: list[float], top: float, vmax: float, dx: float, area: bool) -> str:
    """An SVG path through ``values`` (as steps, one per bucket), closed to the axis if ``area``."""
    base = top + PANEL
    points = []
    for i, v in enumerate(values):
        y = base - (v / vmax) * PANEL
        points.append(f"{LEFT + i * dx:.1f},{y:.1f}")
        points.append(f"{LEFT + (i + 1) * dx:.1f},{y:.1f}")
    if not points:
        return ""
    d = "M" + " L".join(points)
    if area:
        d = f"M{LEFT:.1f},{base:.1f} L" + " L".join(points) + f" L{LEFT + len(values) * dx:.1f},{base:.1f} Z"
    return d


def _axis(top: float, vmax: float, label: str, activity: dict[str, Any], dx: float) -> list[str]:
    base = top + PANEL
    out = [f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#999"/>',
           f'<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{base}" stroke="#999"/>',
           f'<text x="{LEFT - 4}" y="{top + 9}" text-anchor="end">{escape(f"{vmax:g}")}</text>',
           f'<text x="{LEFT - 4}" y="{base}" text-anchor="end">0</text>',
           f'<text x="{LEFT + 4}" y="{top - 6}" font-weight="bold">{escape(label)}</text>']
    since, step = activity["since"], activity["step"]
    # a tick every hour and a time every 3 over a day; a tick and a time every 10 minutes over an hour
    tick, label = (3600.0, 3) if activity["until"] - since > 2 * 3600 else (600.0, 1)
    t = (int(since // tick) + 1) * tick
    while t < activity["until"]:
        x = LEFT + (t - since) / step * dx
        out.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#999"/>')
        if int(t // tick) % label == 0:
            out.append(f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle">'
                       f'{escape(time.strftime("%H:%M", time.localtime(t)))}</text>')
        t += tick
    return out


def render(activity: dict[str, Any]) -> str:
    """The SVG of one :func:`bridge.eventcore.ledger.activity` result."""
    succeeded, failures, backlog = activity["succeeded"], activity["failures"], activity["backlog"]
    n = max(1, len(succeeded))
    dx = (WIDTH - LEFT - RIGHT) / n
    per_step = " per minute" if activity["step"] == 60 else f" per {activity['step']:g} s"
    top1, top2 = TOP, TOP + PANEL + GAP
    height = top2 + PANEL + 22
    vmax1 = _nice_max(max([*succeeded, *failures, 0]))
    vmax2 = _nice_max(max([*backlog, 0]))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
             f'height="{height}" role="img" aria-label="attempts per minute and backlog, last {_span(activity)}" '
             'font-family="sans-serif" font-size="11">',
             *_axis(top1, vmax1, f"attempts{per_step}: done (green), failed (red)", activity, dx),
             f'<path d="{_path(succeeded, top1, vmax1, dx, True)}" fill="{DONE_COLOUR}" fill-opacity="0.55" '
             f'stroke="{DONE_COLOUR}" stroke-width="0.6"/>',
             f'<path d="{_path(failures, top1, vmax1, dx, True)}" fill="{FAILED_COLOUR}" fill-opacity="0.7" '
             f'stroke="{FAILED_COLOUR}" stroke-width="0.6"/>',
             *_axis(top2, vmax2, "backlog (open deliveries)", activity, dx),
             f'<path d="{_path(backlog, top2, vmax2, dx, False)}" fill="none" stroke="{BACKLOG_COLOUR}" '
             'stroke-width="1.5"/>',
             "</svg>"]
    return "\n".join(parts)


def _span(activity: dict[str, Any]) -> str:
    hours = (activity["until"] - activity["since"]) / 3600
    return "hour" if hours <= 1 else f"{hours:g} hours"


def table(activity: dict[str, Any], period: float) -> list[dict[str, Any]]:
    """The chart's numbers a ``period`` at a time, newest first: attempts done and failed in it,
    the backlog at its end (the most open deliveries seen at a step's end in it)."""
    per = max(1, round(period / activity["step"]))
    rows = []
    for i in range(0, len(activity["succeeded"]), per):
        start = activity["since"] + i * activity["step"]
        rows.append({"from": start, "until": min(activity["until"], start + per * activity["step"]),
                     "succeeded": sum(activity["succeeded"][i:i + per]), "failures": sum(activity["failures"][i:i + per]),
                     "backlog": activity["backlog"][min(i + per, len(activity["backlog"])) - 1],
                     "backlog_max": max(activity["backlog"][i:i + per])})
    return rows[::-1]


def summary(activity: dict[str, Any]) -> dict[str, Any]:
    """Totals of the chart, for the JSON twin and the page's caption."""
    return {"succeeded": sum(activity["succeeded"]), "failures": sum(activity["failures"]),
            "backlog_max": max(activity["backlog"], default=0), "since": activity["since"],
            "until": activity["until"], "step": activity["step"]}

"""The console's deliveries: the list (with a retry button per failed row, a selection to retry or
purge, and *Retry all failed*), one delivery with its attempt history, and the subscriber-wide
retry and purge. Each action calls the ``bridge.eventcore.deliveries`` function the CLI calls
(``ombridge retry``, ``ombridge deliveries purge``, ``ombridge subscriber purge``).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...doorbell import ring
from ...errors import UsageError
from ...eventcore import catalog, deliveries, ledger
from ...model import DeliveryStatus
from ...store import Connection
from .base import Console, Refusal, form, form_ids, number, path_int, row_id

LIST = "/ui/deliveries"
PAGE, MAX_PAGE = 100, 1000  # deliveries a page: by default, and at most (?limit=)


def _back(to: str | None) -> str:
    """Where an action on the list goes back to: the list as it was filtered, never off it."""
    return to if to and to.startswith(LIST) and not to.startswith("//") else LIST


class Queue:
    """Deliveries and their actions, over one :class:`Console`."""

    def __init__(self, console: Console) -> None:
        self.c = console

    async def deliveries(self, request: Request) -> Response:
        """Deliveries by status and subscriber, newest first, a page at a time: *Older* below the
        last one shown (``before``), *Newer* above the first (``after``), as deep as the data goes."""
        q = request.query_params
        status = q.get("status") or None
        try:
            subscriber = number(q.get("subscriber"), "subscriber")
            before, after = number(q.get("before"), "before"), number(q.get("after"), "after")
            limit = number(q.get("limit"), "limit")
            limit = PAGE if limit is None else limit
            if not 1 <= limit <= MAX_PAGE:
                raise UsageError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        except UsageError as exc:
            raise Refusal(400, str(exc)) from exc

        def read(conn: Connection) -> dict[str, Any]:
            rows = ledger.list_deliveries(conn, status, subscriber, limit + 1, before=before, after=after)
            more = len(rows) > limit  # one more than a page: is there a page beyond, the way we went?
            rows = (rows[1:] if after is not None else rows[:-1]) if more else rows
            going_newer = after is not None
            return {"deliveries": rows, "subscribers": catalog.list_subscribers(conn), "now": time.time(),
                    "statuses": [st.value for st in DeliveryStatus],
                    "filter": {"status": status or "", "subscriber": subscriber}, "limit": limit,
                    "older": rows[-1]["id"] if rows and (more or going_newer) else None,
                    "newer": rows[0]["id"] if rows and ((more and going_newer) or before is not None) else None,
                    "backlog": ledger.backlog(conn), "here": str(request.url.path)
                    + (f"?{request.url.query}" if request.url.query else "")}

        return await self.c.view(request, "deliveries.html", read, refuse=400)

    async def delivery(self, request: Request) -> Response:
        """One delivery with every attempt (start, end, exit status, output tail, error)."""
        delivery_id = path_int(request, "delivery_id")
        return await self.c.view(request, "delivery.html",
                                 lambda conn: {"delivery": ledger.show(conn, delivery_id), "now": time.time()})

    async def retry_one(self, request: Request) -> Response:
        """A failed delivery back to open, due now (the Event Manager is woken)."""
        delivery_id = path_int(request, "delivery_id")
        to = _back(form(request).get("back")) if form(request).get("back") else f"{LIST}/{delivery_id}"
        return await self.c.act(request, to, self._retry_one, delivery_id)

    def _retry_one(self, conn: Connection, delivery_id: int) -> str:
        """A failed delivery reopened (a new round), or an open one waiting in backoff made due
        now (*Retry now*: its round goes on); both due at once."""
        if deliveries.retry_failed(conn, delivery_ids=[delivery_id]):
            said = f"delivery {delivery_id} is open again and due now"
        elif deliveries.due_now(conn, [delivery_id]):
            said = f"delivery {delivery_id} is due now: its next attempt starts without waiting out the backoff"
        else:
            raise UsageError(f"delivery {delivery_id} is neither failed nor waiting in backoff: nothing to retry")
        ring(self.c.home.root)
        return said

    async def chosen(self, request: Request) -> Response:
        """The list's buttons: retry one row, retry or purge the ticked rows, retry all failed."""
        f = form(request)
        to, ids, do = _back(f.get("back")), form_ids(request), f.get("do", "")
        if f.get("one"):
            return await self.c.act(request, to, self._retry_one, row_id(f["one"]))
        if do == "retry-all":
            return await self.c.act(request, to, self._retry, None)
        if do not in ("retry", "purge"):
            raise Refusal(400, f"no action {do[:40]!r}: retry, purge or retry-all")
        if not ids:
            return self.c.back(request, to, False, f"nothing to {do}: tick the deliveries first")
        if do == "retry":
            return await self.c.act(request, to, self._retry, ids)
        if f.get("confirm") != "yes":  # a purge is asked for again, with what it drops
            return self.c.page(request, "purge_chosen.html", {"ids": ids, "back": to})
        return await self.c.act(request, to, lambda conn: f"{deliveries.purge_chosen(conn, ids)} of {len(ids)} "
                                                          "chosen deliveries purged")

    def _retry(self, conn: Connection, ids: list[int] | None) -> str:
        n = deliveries.retry_failed(conn, delivery_ids=ids)
        if n:
            ring(self.c.home.root)
        if ids is None:
            return f"{n} failed deliveries reopened"
        return f"{n} of {len(ids)} chosen deliveries reopened" + ("" if n == len(ids) else " (only failed ones are)")

    async def retry_subscriber(self, request: Request) -> Response:
        """Every failed delivery of one subscriber back to open."""
        sid = path_int(request, "subscriber_id")

        def retry(conn: Connection) -> str:
            catalog.get_subscriber(conn, sid)
            n = deliveries.retry_failed(conn, subscriber_id=sid)
            ring(self.c.home.root)
            return f"subscriber {sid}: {n} failed deliveries reopened"

        return await self.c.act(request, f"{LIST}?subscriber={sid}", retry)

    async def purge_confirm(self, request: Request) -> Response:
        """The confirmation step before a purge: what would be dropped."""
        sid = path_int(request, "subscriber_id")

        def read(conn: Connection) -> dict[str, Any]:
            sub = catalog.show_subscriber(conn, sid)
            open_count = ledger.per_subscriber(conn).get(sid, {}).get(DeliveryStatus.OPEN.value, 0)
            return {"subscriber": sub, "open_count": open_count}

        return await self.c.view(request, "purge.html", read)

    async def purge(self, request: Request) -> Response:
        """Drop a subscriber's open deliveries (after the confirmation step)."""
        sid = path_int(request, "subscriber_id")
        if form(request).get("confirm") != "yes":
            return RedirectResponse(f"/ui/subscribers/{sid}/purge", status_code=303)

        def purge(conn: Connection) -> str:
            return f"subscriber {sid}: {catalog.purge_subscriber(conn, sid)} open deliveries purged"

        return await self.c.act(request, f"{LIST}?subscriber={sid}", purge)

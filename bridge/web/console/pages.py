"""The console's operating pages: login, status (with its chart and buttons), events, deliveries.

Each route reads its parameters, calls library functions (``deliveries``, ``events``, ``catalog``,
``perlhost.check_syntax``, the control channel) and renders; nothing is decided here.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from ... import catalog, control, deliveries, events, ledger
from ...doorbell import ring
from ...errors import BridgeError, ScriptSyntaxError, UsageError
from ...model import DeliveryStatus
from ...perlenv import load_settings
from ...perlhost import check_syntax
from ...wording import restarted
from .base import Console, Refusal, form, is_tls, number, path_int, read_form
from .chart import render, summary
from .session import LOGIN_COOKIE, SESSION_COOKIE, COOKIE_PATH, set_cookie

EVENTS_PAGE = 50
DAY = 24 * 3600.0


class Pages:
    """Login, status, events and deliveries, over one :class:`Console`."""

    def __init__(self, console: Console) -> None:
        self.c = console

    # -- login ----------------------------------------------------------------------------------

    async def login_form(self, request: Request, message: str = "", status_code: int = 200) -> Response:
        """The login form; its token is double-submitted in a cookie."""
        token = self.c.sessions.login_token()
        nxt = request.query_params.get("next", "/ui/status")
        html = self.c.env.get_template("login.html").render(token=token, next=nxt, message=message)
        response = HTMLResponse(html, status_code=status_code)
        set_cookie(response, LOGIN_COOKIE, token, is_tls(request), max_age=3600)
        return response

    async def login(self, request: Request) -> Response:
        """Check the user's password; on success a session cookie and the page asked for."""
        try:
            fields = await read_form(request)
        except Refusal as exc:
            return await self.login_form(request, str(exc), exc.status)
        token = request.cookies.get(LOGIN_COOKIE)
        if not token or fields.get("token") != token:
            return PlainTextResponse("refused: missing or wrong login token (403); reload the login page\n",
                                     status_code=403)
        client = request.client
        session = await self.c.sessions.login(fields.get("user", ""), fields.get("password", ""),
                                              client.host if client else "?")
        if session is None:
            return await self.login_form(request, "wrong user name or password", 401)
        nxt = fields.get("next", "")
        if not nxt.startswith("/ui/") or nxt.startswith("//"):  # never redirect off the console
            nxt = "/ui/status"
        response = RedirectResponse(nxt, status_code=303)
        set_cookie(response, SESSION_COOKIE, session, is_tls(request))
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session: refused from now on, and its cookie dropped."""
        self.c.sessions.end(request.scope["console_user"][1])
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # -- status ---------------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        """Supervisor, ombacksync, Event Manager lanes, listener, backlog: ``ombridge status``."""
        st = await run_in_threadpool(self.c.status) if self.c.status else {}
        return self.c.page(request, "status.html", {"status": st, "now": time.time()})

    async def chart(self, request: Request) -> Response:
        """The last 24 hours as SVG (``?format=json``: the numbers behind it)."""
        until = time.time()
        activity = await self.c.core(ledger.activity, until - DAY, until)
        if request.query_params.get("format") == "json":
            return JSONResponse({**activity, "summary": summary(activity)})
        return Response(render(activity), media_type="image/svg+xml")

    async def check(self, request: Request) -> Response:
        """``ombridge check``: perl -c of the home's script, perl's own answer shown."""
        try:
            text = await run_in_threadpool(lambda: check_syntax(self.c.home.script, self.c.home,
                                                                load_settings(self.c.home)))
        except ScriptSyntaxError as exc:
            return self.c.back(request, "/ui/status", False, f"{exc.script} does not compile:\n{exc.message}")
        except BridgeError as exc:
            return self.c.back(request, "/ui/status", False, str(exc))
        return self.c.back(request, "/ui/status", True, text.strip())

    async def restart(self, request: Request) -> Response:
        """``ombridge restart ombacksync|eventmanager`` through the control channel, same answers."""
        what = form(request).get("what", "")
        try:
            result = await run_in_threadpool(control.request, self.c.home.root, "restart",
                                             timeout=control.RESTART_TIMEOUT + 30, what=what)
        except BridgeError as exc:
            return self.c.back(request, "/ui/status", False, str(exc))
        return self.c.back(request, "/ui/status", True, restarted(what, result))

    # -- events ---------------------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """Events newest first, by topic and key text, a page at a time, each with its deliveries."""
        q = request.query_params
        topic, text = q.get("topic") or None, q.get("text") or None
        try:
            before = number(q.get("before"), "before")
        except UsageError as exc:
            raise Refusal(400, str(exc)) from exc

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            found = events.find_events(conn, topic=topic, text=text, before=before, limit=EVENTS_PAGE)
            per_event = ledger.of_events(conn, [e["id"] for e in found])
            return {"events": [{**e, "deliveries": per_event[e["id"]]} for e in found],
                    "topics": [t["name"] for t in catalog.list_topics(conn)],
                    "filter": {"topic": topic or "", "text": text or ""},
                    "next_before": found[-1]["id"] if len(found) == EVENTS_PAGE else None}

        return self.c.page(request, "events.html", await self.c.core(read))

    # -- deliveries -----------------------------------------------------------------------------

    async def deliveries(self, request: Request) -> Response:
        """Deliveries by status and subscriber, newest first."""
        q = request.query_params
        status = q.get("status") or None
        try:
            subscriber = number(q.get("subscriber"), "subscriber")
            limit = number(q.get("limit"), "limit")
            limit = 100 if limit is None else limit
            if not 1 <= limit <= 1000:
                raise UsageError(f"limit must be between 1 and 1000, not {limit}")
        except UsageError as exc:
            raise Refusal(400, str(exc)) from exc

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            return {"deliveries": ledger.list_deliveries(conn, status, subscriber, limit),
                    "subscribers": catalog.list_subscribers(conn), "statuses": [st.value for st in DeliveryStatus],
                    "filter": {"status": status or "", "subscriber": subscriber}, "limit": limit,
                    "backlog": ledger.backlog(conn)}

        return await self.c.view(request, "deliveries.html", read, refuse=400)

    async def delivery(self, request: Request) -> Response:
        """One delivery with every attempt (start, end, exit status, output tail, error)."""
        delivery_id = path_int(request, "delivery_id")
        return await self.c.view(request, "delivery.html",
                                 lambda conn: {"delivery": ledger.show(conn, delivery_id)})

    async def retry_one(self, request: Request) -> Response:
        """A failed delivery back to open, due now (the Event Manager is woken)."""
        delivery_id = path_int(request, "delivery_id")

        def retry(conn: sqlite3.Connection) -> str:
            if not deliveries.retry_failed(conn, delivery_id=delivery_id):
                raise UsageError(f"delivery {delivery_id} is not failed: nothing to retry")
            ring(self.c.home.root)
            return f"delivery {delivery_id} is open again and due now"

        return await self.c.act(request, f"/ui/deliveries/{delivery_id}", retry)

    async def retry_subscriber(self, request: Request) -> Response:
        """Every failed delivery of one subscriber back to open."""
        sid = path_int(request, "subscriber_id")

        def retry(conn: sqlite3.Connection) -> str:
            catalog.get_subscriber(conn, sid)
            n = deliveries.retry_failed(conn, subscriber_id=sid)
            ring(self.c.home.root)
            return f"subscriber {sid}: {n} failed deliveries reopened"

        return await self.c.act(request, f"/ui/deliveries?subscriber={sid}", retry)

    async def purge_confirm(self, request: Request) -> Response:
        """The confirmation step before a purge: what would be dropped."""
        sid = path_int(request, "subscriber_id")

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            sub = catalog.show_subscriber(conn, sid)
            open_count = ledger.counts(conn, subscriber_id=sid)[DeliveryStatus.OPEN.value]
            return {"subscriber": sub, "open_count": open_count}

        return await self.c.view(request, "purge.html", read)

    async def purge(self, request: Request) -> Response:
        """Drop a subscriber's open deliveries (after the confirmation step)."""
        sid = path_int(request, "subscriber_id")
        if form(request).get("confirm") != "yes":
            return RedirectResponse(f"/ui/subscribers/{sid}/purge", status_code=303)

        def purge(conn: sqlite3.Connection) -> str:
            return f"subscriber {sid}: {catalog.purge_subscriber(conn, sid)} open deliveries purged"

        return await self.c.act(request, f"/ui/deliveries?subscriber={sid}", purge)

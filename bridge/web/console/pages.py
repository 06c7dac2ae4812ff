"""The console's operating pages: login, status (with its chart and buttons), events.

Each route reads its parameters, calls library functions (``ledger``, ``events``, ``catalog``,
``perlhost.check_syntax``, the control channel) and renders; nothing is decided here.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from ... import store
from ...client import control
from ...errors import BridgeError, ScriptSyntaxError, UsageError
from ...eventcore import catalog, events, ledger
from ...ombacksync.perlenv import load_settings
from ...ombacksync.perlhost import check_syntax
from ...store import Connection
from ...wording import restarted
from ..auth import Throttled
from . import statusview
from .base import Console, Refusal, form, is_tls, number, read_form
from .chart import render, summary, table
from .session import COOKIE_PATH, LOGIN_COOKIE, SESSION_COOKIE, set_cookie

EVENTS_PAGE = 50
WINDOWS = {"1h": 3600.0, "24h": 24 * 3600.0}  # the chart's windows, the first one shown first


def chart_window(request: Request) -> str:
    """The chart window asked for (``?window=``); 400 for one the console does not draw."""
    window = request.query_params.get("window") or next(iter(WINDOWS))
    if window not in WINDOWS:
        raise Refusal(400, f"window must be one of {', '.join(WINDOWS)}, not {window[:20]!r}")
    return window


class Pages:
    """Login, status and events, over one :class:`Console`."""

    def __init__(self, console: Console) -> None:
        self.c = console

    # -- login ----------------------------------------------------------------------------------

    async def login_form(self, request: Request, message: str = "", status_code: int = 200,
                         user: str = "", nxt: str | None = None, headers: dict[str, str] | None = None) -> Response:
        """The login form (after a failed login: with the user name typed); its token is
        double-submitted in a cookie."""
        token = self.c.sessions.login_token()
        nxt = request.query_params.get("next", "/ui/status") if nxt is None else nxt
        html = self.c.env.get_template("login.html").render(token=token, next=nxt, message=message, user=user)
        response = HTMLResponse(html, status_code=status_code, headers=headers)
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
        again = {"user": fields.get("user", ""), "nxt": fields.get("next", "/ui/status")}  # the form, filled again
        try:
            session = await self.c.sessions.login(fields.get("user", ""), fields.get("password", ""),
                                                  client.host if client else "?")
        except Throttled as exc:  # as HTTP Basic answers: the password was not even checked
            return await self.login_form(request, str(exc), 429, headers={"Retry-After": str(exc.seconds)}, **again)
        except store.failures() as exc:  # the database is away: the session cannot be kept
            return await self.login_form(request, f"the event core cannot be reached now: {exc}", 503, **again)
        if session is None:
            return await self.login_form(request, "wrong user name or password", 401, **again)
        nxt = fields.get("next", "")
        if not nxt.startswith("/ui/") or nxt.startswith("//"):  # never redirect off the console
            nxt = "/ui/status"
        response = RedirectResponse(nxt, status_code=303)
        set_cookie(response, SESSION_COOKIE, session, is_tls(request))
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session: refused from now on, and its cookie dropped."""
        await self.c.sessions.end(request.scope["console_user"][1])
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # -- status ---------------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        """Supervisor, ombacksync, Event Manager lanes, listener, backlog: ``ombridge status``, with
        the headline counters and the tables (``view``) the live refresh puts in place; in HTML
        also the chart's window and its numbers (the JSON twin, refreshed every few seconds, reads
        no chart). While the event core cannot be reached the page still answers, from the
        supervisor's memory, with the outage said on top."""
        window = chart_window(request)
        st = await run_in_threadpool(self.c.status) if self.c.status else {}
        now = time.time()
        try:
            per_subscriber = await self.c.core(catalog.list_subscribers)
        except store.failures():
            per_subscriber = None
        data: dict[str, Any] = {"status": st, "now": now, "window": window,
                                "view": statusview.view(st, per_subscriber, now), "outage": self.c.outage_facts()}
        if request.query_params.get("format") != "json":
            try:
                activity = await self.c.core(ledger.activity, now - WINDOWS[window], now)
            except store.failures():
                activity = None
            data.update(windows=list(WINDOWS), numbers=table(activity, WINDOWS[window] / 12) if activity else None)
        return self.c.page(request, "status.html", data)

    async def chart(self, request: Request) -> Response:
        """The chart of the last hour or 24 hours (``?window=1h|24h``) as SVG (``?format=json``:
        the numbers behind it)."""
        until = time.time()
        activity = await self.c.core(ledger.activity, until - WINDOWS[chart_window(request)], until)
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
                                             timeout=control.RESTART_TIMEOUT + 30, what=what,
                                             by=request.scope["console_user"][0])  # (named in the audit line)
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

        def read(conn: Connection) -> dict[str, Any]:
            found = events.find_events(conn, topic=topic, text=text, before=before, limit=EVENTS_PAGE)
            per_event = ledger.of_events(conn, [e["id"] for e in found])
            return {"events": [{**e, "deliveries": per_event[e["id"]]} for e in found],
                    "topics": [t["name"] for t in catalog.list_topics(conn)],
                    "filter": {"topic": topic or "", "text": text or ""},
                    "next_before": found[-1]["id"] if len(found) == EVENTS_PAGE else None}

        return self.c.page(request, "events.html", await self.c.core(read))

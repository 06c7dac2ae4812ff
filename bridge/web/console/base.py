"""What every console page and action shares: authentication, CSRF, forms, rendering, flashes.

A page is ``await console.page(request, "name.html", data)``: the HTML of the template, or with
``?format=json`` the same ``data`` as JSON (the page's twin). An action is a POST that checks the
CSRF token, calls one library function, and redirects to a page that shows the answer
(Post/Redirect/Get) — the library's error sentence when it refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
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
from ...errors import BridgeError, NotFound, UsageError
from ...eventcore import audit, builtins, nodes
from ...home import Home
from ...outage import Outage
from ...store import Store
from ...wording import (
    attempt_rounds,
    clock,
    duration,
    eventmanager_facts,
    history_header,
    paused_since,
    status_name,
    when,
)
from ..auth import REALM, Authenticator, Throttled
from .session import COOKIE_PATH, FLASH_COOKIE, Sessions

HERE = Path(__file__).resolve().parent
MAX_FORM = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
TITLES = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found", 405: "Not allowed",
          413: "Too large", 415: "Wrong form", 429: "Wait", 500: "Failed", 503: "The event core cannot be reached"}
log = logging.getLogger("ombridge.web")

Handler = Callable[[Request], Awaitable[Response]]


class Refusal(Exception):
    """An answer other than the page: 400/403/404/413/415 with one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _shown_json(value: Any, indent: int | None) -> str:
    """A key or a context (a stored JSON text, or decoded) as JSON text, indented or on one line; a
    text that is not JSON as it is."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, ensure_ascii=False, indent=indent)


def pretty_json(value: Any) -> str:
    """A key or a context indented for reading."""
    return _shown_json(value, 1)


def compact_json(value: Any) -> str:
    """A key or a context on one line: ``{"APPC": "KE1", "TASK": "T1"}``."""
    return _shown_json(value, None)


class Console:
    """The console's shared parts: the home, the users' sessions, the supervisor's status, templates."""

    def __init__(self, home: Home, store: Store, authenticator: Authenticator,
                 status: Callable[[], dict[str, Any]] | None, session_key: bytes | None = None) -> None:
        self.home = home
        self.store = store  # the process's one Store: pages borrow its connections
        self.sessions = Sessions(authenticator, self.core, key=session_key)
        self.status = status
        # the event core's outage as this console met it: since when (wall clock), and why
        self.outage = Outage(log, "the console", clock=time.time)
        self.outage_reason = ""
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=when, clock=clock, duration=duration, pretty_json=pretty_json,
                                compact_json=compact_json, eventmanager_facts=eventmanager_facts,
                                history_header=history_header, attempt_rounds=attempt_rounds, status_name=status_name,
                                short_checksum=nodes.short_checksum, paused_since=paused_since,
                                subscriber_name=builtins.display_name)

    # -- the library, off the event loop ---------------------------------------------------------

    async def core(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(conn, *args, **kwargs)`` on a connection to the event core (:meth:`Store.lend`),
        in a worker thread."""
        def run() -> Any:
            with self.store.lend() as conn:
                return fn(conn, *args, **kwargs)
        try:
            result = await run_in_threadpool(run)
        except store.failures() as exc:
            self.outage_reason = " ".join(str(exc).split())
            self.outage.failed(self.outage_reason)
            raise
        self.outage.recovered()
        return result

    def outage_facts(self) -> dict[str, Any] | None:
        """The event core's outage as the pages show it (since when, why), or None."""
        since = self.outage.began
        return None if since is None else {"since": since, "reason": self.outage_reason}

    # -- answers ---------------------------------------------------------------------------------

    def page(self, request: Request, template: str, data: dict[str, Any], status_code: int = 200) -> Response:
        """The page (or its JSON twin with ``?format=json``) showing ``data``."""
        if request.query_params.get("format") == "json":
            return JSONResponse(data, status_code=status_code)
        user, session_id = request.scope.get("console_user", ("", ""))
        flash = self.sessions.read_flash(request)
        html = self.env.get_template(template).render(
            **data, user=user, csrf=self.sessions.csrf_token(session_id), flash=flash, path=request.url.path)
        response = HTMLResponse(html, status_code=status_code)
        if FLASH_COOKIE in request.cookies:
            response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
        return response

    def refusal(self, request: Request, status: int, message: str,
                headers: dict[str, str] | None = None) -> Response:
        """An error as the asker reads it: a page of the console (with its navigation) for a
        browser, ``{"error": ...}`` for a JSON twin, one line of text for anyone else (curl)."""
        if request.query_params.get("format") == "json":
            return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
        if not wants_html(request):
            return PlainTextResponse(f"{message}\n", status_code=status, headers=headers)
        user, session_id = request.scope.get("console_user", ("", ""))
        html = self.env.get_template("error.html").render(
            code=status, title=TITLES.get(status, "Error"), message=message, user=user, flash=None,
            csrf=self.sessions.csrf_token(session_id), path=request.url.path, outage=None)
        return HTMLResponse(html, status_code=status, headers=headers)

    def unreachable(self, request: Request, exc: BaseException) -> Response:
        """503 while the event core cannot be reached: the console's outage page (the reason and
        since when, and what still works) for a browser; the reason only for a user."""
        facts = self.outage_facts() or {"since": time.time(), "reason": " ".join(str(exc).split())}
        user, session_id = request.scope.get("console_user", ("", ""))
        if not user:  # (the reason names the database's host: for users only)
            facts = {**facts, "reason": ""}
        headers = {"Retry-After": "5"}
        message = "the event core cannot be reached now" + (f": {facts['reason']}" if facts["reason"] else "")
        if request.query_params.get("format") == "json":
            return JSONResponse({"error": message, "status": 503, "outage": facts}, status_code=503, headers=headers)
        if not wants_html(request):
            return PlainTextResponse(f"{message} (503)\n", status_code=503, headers=headers)
        html = self.env.get_template("error.html").render(
            code=503, title=TITLES[503], message="", user=user, flash=None, outage=facts,
            csrf=self.sessions.csrf_token(session_id), path=request.url.path)
        return HTMLResponse(html, status_code=503, headers=headers)

    async def view(self, request: Request, template: str, read: Callable[..., dict[str, Any]], *args: Any,
                   refuse: int = 404, gone: str | None = None) -> Response:
        """The page ``template`` showing ``read(conn, *args)``; a :class:`UsageError` (an unknown id,
        a bad parameter) answers ``refuse`` with its sentence, or, for what is not found, goes
        back to the list ``gone`` with it (where an action on a removed subscriber lands)."""
        try:
            data = await self.core(read, *args)
        except NotFound as exc:
            if gone is not None and FLASH_COOKIE in request.cookies:  # an action's answer is waiting
                return self.back(request, gone, False, str(exc))
            raise Refusal(refuse, str(exc)) from exc
        except UsageError as exc:
            raise Refusal(refuse, str(exc)) from exc
        return self.page(request, template, data)

    def back(self, request: Request, to: str, ok: bool, message: str) -> Response:
        """Redirect (303) to the page ``to``, which then shows ``message``."""
        response = RedirectResponse(to, status_code=303)
        self.sessions.flash(response, ok, message, secure=is_tls(request))
        return response

    async def act(self, request: Request, to: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Response:
        """Run the action ``fn(conn, ...)`` (it returns the sentence to show) and go back to ``to``;
        what it did is written to the audit trail, naming the console user."""
        try:
            message = await self.core(fn, *args, **kwargs)
        except BridgeError as exc:
            return self.back(request, to, False, str(exc))
        audit.record(audit.console_user(request.scope["console_user"][0]), str(message))
        return self.back(request, to, True, str(message))

    # -- guards ----------------------------------------------------------------------------------

    def guarded(self, handler: Handler) -> Handler:
        """Authentication on every page and action; a valid CSRF token on every POST."""
        async def endpoint(request: Request) -> Response:
            try:
                return await guarded_call(request)
            except store.failures() as exc:  # the database is away: try again soon
                return self.unreachable(request, exc)

        async def guarded_call(request: Request) -> Response:
            try:
                who = await self.sessions.identify(request)
            except Throttled as exc:  # Basic credentials from an address that must wait
                return PlainTextResponse(f"{exc} (429)\n", status_code=429, headers={"Retry-After": str(exc.seconds)})
            if who is None:
                wants_html = request.method == "GET" and request.query_params.get("format") != "json"
                if wants_html:
                    return RedirectResponse("/ui/login?next=" + quote(request.url.path, safe="/"), status_code=303)
                return PlainTextResponse("authentication required (401)\n", status_code=401,
                                         headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            request.scope["console_user"] = who
            try:
                if request.method == "POST":
                    lists = await read_form_lists(request)
                    form = {name: values[-1] for name, values in lists.items()}
                    if not self.sessions.csrf_ok(who[1], form.get("csrf")):
                        return PlainTextResponse("refused: missing or wrong CSRF token (403); reload the page\n",
                                                 status_code=403)
                    request.scope["console_form"] = form
                    request.scope["console_form_lists"] = lists
                return await handler(request)
            except Refusal as exc:
                return self.refusal(request, exc.status, str(exc))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint


def wants_html(request: Request) -> bool:
    """Whether the asker is a browser (it asks for HTML by name; curl and httpx ask ``*/*``)."""
    return "text/html" in request.headers.get("accept", "")


def is_tls(request: Request) -> bool:
    """Whether the request came over TLS (cookies are then ``Secure``)."""
    return request.url.scheme == "https"


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form (the console's only kind), each field's last value; 413/415 otherwise."""
    return {name: values[-1] for name, values in (await read_form_lists(request)).items()}


async def read_form_lists(request: Request) -> dict[str, list[str]]:
    """A urlencoded form with every value of each field (checkboxes of one name); 413/415 otherwise."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        raise Refusal(415, f"send the form as {FORM_TYPE}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise Refusal(413, f"the form is larger than {MAX_FORM} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise Refusal(400, "the form is not UTF-8") from exc
    return fields


MAX_ID = 2**63 - 1  # SQLite's largest integer


def path_int(request: Request, name: str) -> int:
    """An id from the path; 404 when it is not a number."""
    try:
        value = int(request.path_params[name])
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_ID:
        raise Refusal(404, f"no such {name.replace('_', ' ')}")
    return value


def form(request: Request) -> dict[str, str]:
    """The form of a POST that passed the guard."""
    return request.scope.get("console_form", {})


def form_ids(request: Request, name: str = "id") -> list[int]:
    """Every value of the field ``name`` (checked boxes) of a POST that passed the guard, as ids;
    400 when one is not an id."""
    return [row_id(text) for text in request.scope.get("console_form_lists", {}).get(name, [])]


def row_id(text: str) -> int:
    """A row id a form sent (a ticked box, a row's button); 400 when it is not one."""
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise Refusal(400, f"not a row id: {text[:40]!r}")
    return int(text)


def number(text: str | None, what: str, kind: type = int) -> Any:
    """A form field as a number, or None when empty; :class:`UsageError` when it is not one."""
    if text is None or not text.strip():
        return None
    try:
        value = kind(text.strip())
    except ValueError:
        raise UsageError(f"{what} must be a number, not {text!r}") from None
    if kind is int and not -MAX_ID <= value <= MAX_ID:
        raise UsageError(f"{what} is out of range: {text.strip()[:40]}")
    return value

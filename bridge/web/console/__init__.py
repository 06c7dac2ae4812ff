"""The operator console: server-rendered pages under ``/ui``, served by the HTTP listener.

docs/console.md describes it for operators. The pages are thin views over the library the CLI
uses (Jinja2 templates, autoescaped; a JSON twin of every page with ``?format=json``); every
state change is a POSTed form with a CSRF token; authentication is a login form with a signed
session cookie (or HTTP Basic for reading), for the users of ``ombridge user add``.

:func:`mount` puts the console in front of the listener's application: paths under ``/ui`` go
to the console (which authenticates them itself), everything else to the listener's routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...home import Home
from ...store import Store
from ..auth import Authenticator
from .base import HERE, Console
from .maintenance import Maintenance
from .pages import Pages
from .queue import Queue

PREFIX = "/ui"
# Every console answer: no framing (clickjacking), scripts, styles and images from the console
# only (status.js is a file, never inline), nothing cached, no referrer leaving the site.
HEADERS = [(b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                        b"form-action 'self'; base-uri 'none'"),
           (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin"), (b"cache-control", b"no-store")]


def create_console(home: Home, store: Store, authenticator: Authenticator,
                   status: Callable[[], dict[str, Any]] | None = None, session_key: bytes | None = None) -> Starlette:
    """The console's ASGI application (its routes carry the full ``/ui/...`` paths)."""
    console = Console(home, store, authenticator, status, session_key)
    pages, maint, queue = Pages(console), Maintenance(console), Queue(console)
    g = console.guarded

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/status", status_code=303)

    async def not_found(request: Request) -> Response:
        """Any other path under /ui: the console's own 404 page (for a user)."""
        return console.refusal(request, 404, f"no page {request.url.path[:200]}")

    get, post = ["GET"], ["POST"]
    routes = [
        Route("/ui", root, methods=get),
        Route("/ui/", root, methods=get),
        Route("/ui/login", pages.login_form, methods=get),
        Route("/ui/login", pages.login, methods=post),
        Route("/ui/logout", g(pages.logout), methods=post),
        Route("/ui/status", g(pages.status), methods=get),
        Route("/ui/status/chart.svg", g(pages.chart), methods=get),
        Route("/ui/status/check", g(pages.check), methods=post),
        Route("/ui/status/restart", g(pages.restart), methods=post),
        Route("/ui/events", g(pages.events), methods=get),
        Route("/ui/deliveries", g(queue.deliveries), methods=get),
        Route("/ui/deliveries", g(queue.chosen), methods=post),
        Route("/ui/deliveries/{delivery_id}", g(queue.delivery), methods=get),
        Route("/ui/deliveries/{delivery_id}/retry", g(queue.retry_one), methods=post),
        Route("/ui/topics", g(maint.topics), methods=get),
        Route("/ui/topics", g(maint.topic_add), methods=post),
        Route("/ui/topics/remove", g(maint.topic_remove_confirm), methods=get),
        Route("/ui/topics/remove", g(maint.topic_remove), methods=post),
        Route("/ui/subscribers", g(maint.subscribers), methods=get),
        Route("/ui/subscribers", g(maint.subscriber_add), methods=post),
        Route("/ui/subscribers/{subscriber_id}", g(maint.subscriber), methods=get),
        Route("/ui/subscribers/{subscriber_id}", g(maint.subscriber_edit), methods=post),
        Route("/ui/subscribers/{subscriber_id}/retry", g(queue.retry_subscriber), methods=post),
        Route("/ui/subscribers/{subscriber_id}/purge", g(queue.purge_confirm), methods=get),
        Route("/ui/subscribers/{subscriber_id}/purge", g(queue.purge), methods=post),
        Route("/ui/subscribers/{subscriber_id}/topics", g(maint.topic_attach), methods=post),
        Route("/ui/subscribers/{subscriber_id}/topics/remove", g(maint.topic_detach), methods=post),
        Route("/ui/subscribers/{subscriber_id}/filters", g(maint.filter_add), methods=post),
        Route("/ui/subscribers/{subscriber_id}/filters/remove", g(maint.filter_remove), methods=post),
        Route("/ui/subscribers/{subscriber_id}/{what}", g(maint.subscriber_confirm), methods=get),
        Route("/ui/subscribers/{subscriber_id}/{what}", g(maint.subscriber_switch), methods=post),
        Route("/ui/integrations", g(maint.integrations), methods=get),
        Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    missing = g(not_found)

    async def no_route(request: Request, exc: Exception) -> Response:
        return await missing(request)

    app = Starlette(routes=routes, exception_handlers={404: no_route})
    app.router.redirect_slashes = False
    return app


class Mounted:
    """ASGI: ``/ui`` and below to the console, every other path to the listener's own app."""

    def __init__(self, console: Any, rest: Any) -> None:
        self.console = console
        self.rest = rest

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            async def send_with_headers(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    names = {name.lower() for name, _ in message.get("headers", [])}
                    message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in names)]
                await send(message)

            await self.console(scope, receive, send_with_headers)
        else:
            await self.rest(scope, receive, send)


def mount(rest: Any, home: Home, store: Store, authenticator: Authenticator,
          status: Callable[[], dict[str, Any]] | None = None, session_key: bytes | None = None) -> Mounted:
    """The listener's application ``rest`` with the console in front of it under ``/ui``."""
    return Mounted(create_console(home, store, authenticator, status, session_key), rest)

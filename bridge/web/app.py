"""The ASGI application: OMi's Event Synchronization target, the JSON event API, health and metrics.

Routes (all behind HTTP Basic authentication but ``/healthz``; docs/omi.md describes each):

- ``HEAD|GET <base>``: OMi's Test Connection (200 once the credentials are good);
- ``POST <base>/event``: ``<event>`` or ``<event_list>`` -> ``omi/event`` events, answered with the
  external ids and sequence numbers;
- ``POST <base>/event_change/<id>``: ``<event_change>`` -> ``event/update {"ID": <id>, ...}``;
- ``POST /api/v1/events``: JSON ``{"topic", "key", "force"}`` -> the event core's send;
- ``GET /healthz`` (no authentication), ``GET /metrics`` (Prometheus text).

Every request that stores events is answered only after :class:`GroupCommitter` has committed
them. Bad input stores nothing: 400 malformed (XML, JSON, DOCTYPE/entities), 413 body over the
limit (refused from ``Content-Length`` before reading it, or as soon as a chunked body passes it),
415 wrong media type, 404 unknown path or topic, 405 wrong method, 422 missing key fields.

The layers, outermost first: :class:`CountingMiddleware` (requests by status), the Basic
authentication middleware, :class:`OmiRoutes` (OMi's paths, served as plain ASGI: they carry
nearly all the traffic and Starlette's layers would cost a third of the event loop's time per
request), then Starlette for everything else. The operator console (:mod:`bridge.web.console`)
takes ``/ui`` before the Basic layer: the same users, through its own login sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .. import store
from ..delivery.backsync import OMI_EVENT_TOPIC, UPDATE_TOPIC
from ..errors import BridgeError, NotFound, UsageError
from ..eventcore import events, metrics
from ..home import Home
from ..names import check_topic_name
from ..store import Store
from ..syncback import omisync, omitopic
from . import omi
from .auth import Authenticator, BasicAuthMiddleware
from .committer import CommitFailed, GroupCommitter

log = logging.getLogger("ombridge.web")

XML_TYPE = "application/xml; charset=utf-8"
BODY_TIMEOUT = 60.0  # seconds a request body may take to arrive
DISCARD_LIMIT = 16 << 20  # bytes of a too-large body read and dropped before the 413 (larger: no wait)
DISCARD_TIMEOUT = 10.0  # seconds spent dropping it at most
HSTS = (b"strict-transport-security", b"max-age=31536000")
DISABLED_RETRY_AFTER = 30  # seconds: a disabled system subscriber waits for an operator, not for a blip


@dataclass
class WebContext:
    """What the routes need: the home, the committer, the settings, the supervisor's status."""

    home: Home
    store: Store  # the process's one Store
    committer: GroupCommitter
    authenticator: Authenticator
    omi_base: str = "/omi"
    max_body: int = 1 << 20
    status: Callable[[], dict[str, Any]] | None = None
    external_id: tuple[str, ...] = omi.DEFAULT_EXTERNAL_ID  # [omi] external_id's candidates
    tls: bool = False  # HSTS on every answer when the listener speaks HTTPS
    session_key: bytes | None = None  # the console's signing key (None: one of this process's)
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class Refused(Exception):
    """A request answered with an error status and a one-line reason; nothing was stored."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def failure(exc: BaseException) -> Refused | None:
    """The one mapping of what a handler may raise to an error answer (None: not ours, re-raise)."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, ClientDisconnect):
        return Refused(400, "the client went away before sending the whole body", {"Connection": "close"})
    if isinstance(exc, CommitFailed):
        return Refused(503, str(exc), {"Retry-After": "5"})
    if isinstance(exc, events.SystemSubscriberDisabled):  # OMi keeps the close and sends it again
        return Refused(503, str(exc), {"Retry-After": str(DISABLED_RETRY_AFTER)})
    return None


def store_trouble(where: Store) -> str | None:
    """Why the event core cannot be used now (None when it answers): ``/healthz``'s probe. A
    connection of its own, not one lent by the console's pool: a node whose pool is busy with
    slow pages still answers its load balancer."""
    try:
        conn = where.connect()
        try:
            conn.execute("SELECT 1 FROM topics LIMIT 1").fetchall()
        finally:
            conn.close()
    except (BridgeError, *store.failures()) as exc:
        return " ".join(str(exc).split())
    return None


async def sendable_change(where: Store, topic: str, key: dict[str, Any]) -> None:
    """422 for an ``omi/change`` that could never reach OMi (no OMi event known behind its ID, an
    OMi id that cannot be put in a URL): refused now rather than retried for a day. Other topics,
    and a change without ID (the event core's 422 says so), pass."""
    if topic != omitopic.CHANGE_TOPIC or "ID" not in key:
        return

    def check() -> None:
        with where.lend() as conn:
            omisync.targets(conn, key)
    try:
        await run_in_threadpool(check)
    except omisync.Unsendable as exc:
        raise Refused(422, str(exc)) from exc
    except (BridgeError, *store.failures()) as exc:  # the database is away: OMi's answer to a commit too
        raise Refused(503, f"the event core cannot be reached now: {' '.join(str(exc).split())}",
                      {"Retry-After": "5"}) from exc


def _unreachable(reason: str) -> Response:
    """``/healthz``'s and ``/metrics``' answer while the event core cannot be reached."""
    return PlainTextResponse(f"the event core cannot be reached: {reason}\n", status_code=503,
                             headers={"Retry-After": "5"})


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if request.scope["path"].startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


def refusing(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turn what :func:`failure` maps into an error answer."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except (Refused, ClientDisconnect, CommitFailed, events.SystemSubscriberDisabled) as exc:
            refused = failure(exc)
            assert refused is not None
            return _error(request, refused.status, refused.message, refused.headers)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def require_media(request: Any, kind: str) -> None:
    """415 unless the body is ``kind`` ("xml" or "json"); parameters (charset, type=collection) are fine."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "xml":
        ok = media in ("application/xml", "text/xml") or media.endswith("+xml")
    else:
        ok = media == "application/json" or media.endswith("+json")
    if not ok:
        expected = "application/xml or text/xml" if kind == "xml" else "application/json"
        raise Refused(415, f"unsupported media type {media or '(none)'!r}: send {expected}")


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass ``limit`` bytes, and
    with 408 when it has not arrived within :data:`BODY_TIMEOUT` seconds."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await _read_body(request, limit)
    except TimeoutError as exc:
        raise Refused(408, f"the body did not arrive within {BODY_TIMEOUT:g} s", {"Connection": "close"}) from exc


async def _read_body(request: Any, limit: int) -> bytes:
    length = request.headers.get("content-length")
    too_large = Refused(413, f"the body is larger than {limit} bytes", {"Connection": "close"})
    if length is not None:
        if not length.strip().isdigit():
            raise Refused(400, "bad Content-Length", {"Connection": "close"})
        if int(length) > limit:
            if int(length) <= DISCARD_LIMIT:
                await _discard(request, DISCARD_LIMIT)
            raise too_large
    body = bytearray()
    while True:  # (request.stream() without its async generator: this is on every request's path)
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body += message.get("body", b"")
        if len(body) > limit:
            if message.get("more_body", False):
                await _discard(request, DISCARD_LIMIT - len(body))
            raise too_large
        if not message.get("more_body", False):
            return bytes(body)


async def _discard(request: Any, budget: int) -> None:
    """Read and drop the rest of a body refused as too large (at most ``budget`` bytes, for at most
    :data:`DISCARD_TIMEOUT` seconds): a client that sends its whole body before reading the answer
    then reads the 413, instead of a connection reset by unread data."""
    try:
        async with asyncio.timeout(DISCARD_TIMEOUT):
            while budget > 0:
                message = await request.receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return
                budget -= len(message.get("body", b""))
    except TimeoutError:
        return


def create_app(ctx: WebContext, extra_routes: list[BaseRoute] | None = None) -> Any:
    """The ASGI application: routes, authentication, request counting."""

    async def healthz(request: Request) -> Response:
        """Load balancers: 200 while the listener serves and the event core answers; 503 (with
        the reason) while it cannot be reached, so that a balancer sends OMi to another node."""
        trouble = await run_in_threadpool(store_trouble, ctx.store)
        return _unreachable(trouble) if trouble else PlainTextResponse("ok\n")

    async def metrics_text(request: Request) -> Response:
        """The Prometheus text of ``ombridge metrics``."""
        def render() -> str:
            with ctx.store.lend() as conn:
                return metrics.render(conn, ctx.status() if ctx.status else None)
        try:
            text = await run_in_threadpool(render)
        except (BridgeError, *store.failures()) as exc:  # the database away: say so, as /healthz does
            return _unreachable(" ".join(str(exc).split()))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @refusing
    async def api_events(request: Request) -> Response:
        """JSON ``{"topic", "key", "force"}`` -> the event core's send."""
        require_media(request, "json")
        topic, key, force = _event_request(await read_body(request, ctx.max_body))
        await sendable_change(ctx.store, topic, key)
        try:
            (result,) = await ctx.committer.commit([(topic, key)], force=force)
        except NotFound as exc:
            raise Refused(404, str(exc)) from exc
        except UsageError as exc:
            raise Refused(422, str(exc)) from exc
        if result.event_id is None:
            return JSONResponse({"stored": False, "event_id": None, "deliveries": 0,
                                 "message": 'nobody listens: the event was not stored (send "force": true to '
                                            'store it anyway)'}, status_code=200)
        return JSONResponse({"stored": True, "event_id": result.event_id, "deliveries": result.deliveries,
                             "synchronized": [{"subscriber": s, "status": st.value} for s, st in result.synchronized]},
                            status_code=201)

    routes: list[BaseRoute] = [
        Route("/api/v1/events", api_events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        *(extra_routes or []),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(request, exc.status_code, exc.detail, exc.headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.router.redirect_slashes = False  # a redirected POST would lose its body
    served: Any = BasicAuthMiddleware(OmiRoutes(ctx, app), ctx.authenticator)
    # -- the operator console (bridge/web/console): /ui authenticates itself (login, session) --
    from .console import mount

    served = mount(served, ctx.home, ctx.store, ctx.authenticator, ctx.status, ctx.session_key)
    # --
    return CountingMiddleware(served, ctx)


TEXT_TYPE = "text/plain; charset=utf-8"
PING = b"ombridge: OMi event synchronization target\n"


class _Request:
    """What the OMi handlers read of a request (Starlette's Request costs more than they need)."""

    __slots__ = ("scope", "receive", "_headers")

    def __init__(self, scope: dict[str, Any], receive: Any) -> None:
        self.scope, self.receive = scope, receive
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers


class OmiRoutes:
    """OMi's paths under ``<base>`` as a plain ASGI app in front of Starlette.

    They carry nearly all the traffic: served here without Starlette's layers of middleware,
    routing and request objects (about a third of the event loop's time per request). Any other
    path goes on to Starlette (``/api/v1/events``, ``/healthz``, ``/metrics``, the console).
    """

    def __init__(self, ctx: WebContext, fallback: Any) -> None:
        self.ctx = ctx
        self.fallback = fallback
        self.base = ctx.omi_base
        self.change_prefix = ctx.omi_base + "/event_change/"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path.startswith(self.change_prefix):
            handler, allowed = self.event_change, ("POST",)
        elif path == self.base + "/event":
            handler, allowed = self.event, ("POST",)
        elif path == self.base or path == self.base + "/":
            handler, allowed = self.ping, ("GET", "HEAD")
        else:
            await self.fallback(scope, receive, send)
            return
        headers: dict[str, str] = {}
        media = TEXT_TYPE if handler == self.ping else XML_TYPE  # (bound methods: == compares, `is` never holds)
        if scope["method"] not in allowed:
            status, body, media, headers = 405, b"Method Not Allowed\n", TEXT_TYPE, {"allow": ", ".join(allowed)}
        else:
            try:
                status, body = 200, await handler(_Request(scope, receive))
            except (Refused, ClientDisconnect, CommitFailed, events.SystemSubscriberDisabled) as exc:
                refused = failure(exc)
                assert refused is not None
                status, body, media = refused.status, refused.message.encode() + b"\n", TEXT_TYPE
                headers = refused.headers
        raw = [(b"content-type", media.encode()), (b"content-length", str(len(body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in headers.items())]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def ping(self, request: _Request) -> bytes:
        """OMi's Test Connection: the credentials were good."""
        return PING

    async def event_change(self, request: _Request) -> bytes:
        """``<event_change>`` -> ``event/update`` with the URL's id, committed before the answer."""
        event_id = path_id(request, self.change_prefix)
        require_media(request, "xml")
        root = _parse_xml(await read_body(request, self.ctx.max_body))
        try:
            key = omi.change_key(event_id, root)
            await self.ctx.committer.commit([(UPDATE_TOPIC, key)], force=True)
        except UsageError as exc:
            raise Refused(400, str(exc)) from exc
        return omi.change_answer(event_id)

    async def event(self, request: _Request) -> bytes:
        """``<event>`` / ``<event_list>`` -> ``omi/event`` events, answered with their external ids."""
        require_media(request, "xml")
        root = _parse_xml(await read_body(request, self.ctx.max_body))
        try:
            forwarded, as_list = omi.events(root, self.ctx.external_id)
            # (the committer sets a re-sent event's key ID to the external id answered the first time)
            await self.ctx.committer.commit([(OMI_EVENT_TOPIC, f.key) for f in forwarded], force=True)
        except UsageError as exc:
            raise Refused(400, str(exc)) from exc
        return omi.events_answer(forwarded, as_list)


class CountingMiddleware:
    """Counts requests served, by status (``status`` and ``/metrics`` show them); adds HSTS under TLS."""

    def __init__(self, app: Any, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = self.ctx
        tls = ctx.tls

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                if tls:  # HTTPS only from now on, for a year (the listener never speaks plain HTTP with TLS)
                    message["headers"] = [*message.get("headers", ()), HSTS]
                ctx.requests += 1
                ctx.by_status[message["status"]] = ctx.by_status.get(message["status"], 0) + 1
            await send(message)

        await self.app(scope, receive, counting_send)


def path_id(request: Any, prefix: str) -> str:
    """The event id after ``prefix`` in the raw path, percent-decoded (``%2F`` is a ``/`` of the id)."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
    encoded = prefix.encode("ascii")
    if not raw.startswith(encoded) or len(raw) == len(encoded):
        raise Refused(404, "no event id in the path: POST <base>/event_change/<external id>")
    try:
        event_id = unquote_to_bytes(raw[len(encoded):]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(400, "the event id in the path is not UTF-8 once percent-decoded") from exc
    if "\x00" in event_id:
        raise Refused(400, "the event id in the path contains a NUL character")
    return event_id


def _parse_xml(body: bytes) -> Any:
    try:
        return omi.parse(body)
    except omi.BadDocument as exc:
        raise Refused(400, str(exc)) from exc


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _event_request(body: bytes) -> tuple[str, dict[str, Any], bool]:
    """(topic, key, force) from a JSON event request; 400 for anything malformed."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Refused(400, 'the body is a JSON object: {"topic": "...", "key": {...}, "force": false}')
    unknown = set(data) - {"topic", "key", "force"}
    if unknown:
        raise Refused(400, f"unknown member(s) {', '.join(sorted(unknown))}: use topic, key and force")
    topic, key, force = data.get("topic"), data.get("key"), data.get("force", False)
    if not isinstance(topic, str):
        raise Refused(400, "topic must be a string")
    if not isinstance(force, bool):
        raise Refused(400, "force must be true or false")
    if not isinstance(key, (dict, str)):
        raise Refused(400, "key must be a JSON object")
    try:
        check_topic_name(topic)
        fields = events.parse_key(key)
    except UsageError as exc:
        raise Refused(400, str(exc)) from exc
    if any(isinstance(v, float) and not math.isfinite(v) for v in fields.values()):
        raise Refused(400, "key values must be finite")
    return topic, fields, force

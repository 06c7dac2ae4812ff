"""The HTTP listener inside the supervisor: uvicorn serving :mod:`bridge.web.app` in a thread.

Why uvicorn + Starlette: a well-kept ASGI server with TLS, keep-alive, HTTP/1.1 pipelining and
graceful shutdown, on the C parser httptools; Starlette is a small toolkit whose routes and
middleware the operator console can share. ``http.server`` has none of that.

The supervisor owns the process and its signals: uvicorn runs in a thread of its own with its own
asyncio loop and installs no signal handler (it installs them only in the main thread). The
socket is bound in :meth:`Listener.start`, in the supervisor's thread, so a busy port or a bad
certificate fails ``ombridge start`` with the reason. :meth:`Listener.stop` drains: it stops
accepting, lets the requests in flight finish (their events committed and answered), closes idle
keep-alive connections, then stores what the committer still holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import store
from ..errors import BridgeError
from ..home import Home
from ..model import LISTENER_MOVES, ListenerState, check_transition
from ..store import Store
from ..syncback import omisync
from . import tls, users
from .app import WebContext, create_app
from .auth import Authenticator, FailureThrottle
from .committer import GroupCommitter
from .config import ListenConfig

log = logging.getLogger("ombridge.web")
START_TIMEOUT = 10.0
DRAIN_TIMEOUT = 30.0
MAX_HEAD = 64 << 10  # bytes of request line and headers
HEAD_TIMEOUT = 30.0  # seconds from a connection or a request's first byte to the end of its headers


class HeadTooLarge(Exception):
    """A request's line and headers pass :data:`MAX_HEAD` (answered 400 by uvicorn, then closed)."""


class _BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks: the request line and headers are
    parsed before authentication, and httptools would buffer them without bound; a client that
    never finishes its headers would hold its connection forever."""

    _head = 0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _count(self, n: int) -> None:
        self._head += n
        if self._head > MAX_HEAD:
            raise HeadTooLarge(f"request line and headers over {MAX_HEAD} bytes")

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server, never touching signals (the supervisor owns them)."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    def capture_signals(self) -> Any:  # newer uvicorn (it already skips them outside the main thread)
        import contextlib

        return contextlib.nullcontext()


def _route_uvicorn_logs() -> None:
    """uvicorn's warnings and errors go to ombridge's own log (never request headers: no access log)."""
    ours = logging.getLogger("ombridge")
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = list(ours.handlers)
        lg.setLevel(logging.WARNING)
        lg.propagate = False




def bind(cfg: ListenConfig) -> socket.socket:
    """The listener's socket, bound and listening (non-blocking): in the supervisor's thread, so
    that a busy port fails ``ombridge start`` with the reason; a listener process inherits it."""
    try:
        infos = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise BridgeError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def url_of(cfg: ListenConfig, address: tuple[str, int] | None) -> str:
    """Where OMi reaches a listener of ``cfg`` bound to ``address`` (the base of the connected
    server is this + the OMi base)."""
    host, port = address or (cfg.host, cfg.port)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if cfg.tls else 'http'}://{host}:{port}"


def described(cfg: ListenConfig, address: tuple[str, int] | None, state: ListenerState) -> dict[str, Any]:
    """The settings part of a listener's status (either kind: in the supervisor, or its processes)."""
    host, port = address or (cfg.host, cfg.port)
    return {"state": state.value, "host": host, "port": port, "url": url_of(cfg, address), "tls": cfg.tls,
            "omi_base": cfg.omi_base, "max_body": cfg.max_body, "trusted_proxies": list(cfg.trusted_proxies)}


class Listener:
    """start() / stop() / status() of the HTTP listener; the supervisor calls nothing else."""

    def __init__(self, home: Home, config: ListenConfig, *, store: Store | None = None,
                 wake: Callable[[], None] | None = None, status: Callable[[], dict[str, Any]] | None = None,
                 sock: socket.socket | None = None, throttle: FailureThrottle | None = None,
                 session_key: bytes | None = None) -> None:
        """``sock``, ``throttle``, ``session_key``: a listener process's (:mod:`bridge.web.worker`):
        the socket the supervisor bound, the login throttle and console key every process shares."""
        self.home = home
        self._given = sock
        self.store = store or Store(home)  # the supervisor's (the process's one), or its own standing alone
        self.config = config
        self.state = ListenerState.STOPPED
        self._state_lock = threading.Lock()
        self.committer = GroupCommitter(self.store, wake)
        self._users_conn = None
        self._users: dict[str, str] | None = None  # the users last read
        self._users_stale = False  # the last reading failed (and said so)
        self.authenticator = Authenticator(self._load_users, throttle=throttle)
        self.ctx = WebContext(home, self.store, self.committer, self.authenticator, config.omi_base, config.max_body,
                              status, omisync.load_config(home).external_id, config.tls, session_key=session_key)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.address: tuple[str, int] | None = None
        self.started_at: float | None = None

    def _change_state(self, new: ListenerState) -> None:
        """The one place the listener's state changes (guarded by :data:`model.LISTENER_MOVES`, logged).
        Called from the supervisor's thread and the serving thread: one lock orders them."""
        with self._state_lock:
            old = self.state
            check_transition(LISTENER_MOVES, old, new, "the HTTP listener")
            self.state = new
        log.info("HTTP listener %s -> %s", old.value, new.value)

    def _load_users(self) -> dict[str, str]:
        # While the database is away (or restarting), the users read last keep serving: OMi's
        # requests are then refused with 503 by the commit, not with 401.
        try:
            self._users_conn = self.store.reopen(self._users_conn)
            self._users = users.hashes(self._users_conn)
            self._users_stale = False
        except (BridgeError, *store.failures()) as exc:
            if self._users is None:
                raise
            if not self._users_stale:  # (re-read every second: said once per outage)
                log.warning("the users could not be read again (%s); the last ones read serve meanwhile", exc)
                self._users_stale = True
        return self._users

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind, load TLS, start serving; raises :class:`BridgeError` with the reason it cannot."""
        cfg = self.config
        context = tls.server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None
        self._load_users()  # now: the users serve even if the database is away at the first request
        sock = self._given or bind(cfg)
        self.address = sock.getsockname()[:2]
        try:
            # ssl_context_factory (uvicorn's public hook): our context, Mozilla intermediate
            # X-Forwarded-For/-Proto only from the proxies named in listen.trusted_proxies (uvicorn
            # would believe 127.0.0.1's: any local client could pick the address the throttle counts)
            uv = uvicorn.Config(create_app(self.ctx), http=_BoundedProtocol, lifespan="off", log_config=None,
                                proxy_headers=bool(cfg.trusted_proxies), forwarded_allow_ips=cfg.forwarded_allow_ips(),
                                access_log=False, server_header=False, timeout_keep_alive=30,
                                timeout_graceful_shutdown=DRAIN_TIMEOUT, limit_concurrency=2048,
                                ssl_context_factory=(lambda config, default: context) if context else None)
            uv.load()  # here, so that anything wrong fails the start
        except (OSError, ssl.SSLError, ValueError) as exc:
            sock.close()
            raise BridgeError(f"cannot use the TLS certificate and key ({cfg.tls_cert}, {cfg.tls_key}): {exc}") from exc
        if cfg.tls_key:
            self._warn_if_readable(cfg.tls_key)
        _route_uvicorn_logs()
        self.committer.start()
        self._server = _Server(uv)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="http-listener", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.committer.stop()
                raise BridgeError(f"the HTTP listener on {self.url} did not start (see the log)")
            time.sleep(0.005)
        self._change_state(ListenerState.LISTENING)
        self.started_at = time.time()
        log.info("listening on %s (OMi base %s, body limit %d bytes, X-Forwarded-For/-Proto believed from %s)",
                 self.url, cfg.omi_base, cfg.max_body, ", ".join(cfg.trusted_proxies) or "no proxy")

    @staticmethod
    def _warn_if_readable(path: str) -> None:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the TLS key %s is readable by group or others: chmod 600 it", path)

    def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException:  # noqa: BLE001 - a dead listener is reported by status, never kills the supervisor
            log.exception("the HTTP listener stopped with an error")
            self._change_state(ListenerState.FAILED)

    def stop(self, timeout: float = DRAIN_TIMEOUT + 5) -> None:
        """Drain: stop accepting, finish the requests in flight, then stop the committer."""
        if self._server is None:
            return
        self._change_state(ListenerState.STOPPING)
        log.info("HTTP listener: draining")
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5)
        self.committer.stop()
        if self._users_conn is not None:
            self._users_conn.close()
            self._users_conn = None
        self.store.close()
        self._server = None
        if self.state is not ListenerState.FAILED:
            self._change_state(ListenerState.STOPPED)
        log.info("HTTP listener stopped after %d requests", self.ctx.requests)

    # -- status --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where OMi reaches the listener (:func:`url_of`)."""
        return url_of(self.config, self.address)

    def status(self) -> dict[str, Any]:
        """The listener's part of ``ombridge status``."""
        state = self.state
        if state is ListenerState.LISTENING and self._thread is not None and not self._thread.is_alive():
            state = ListenerState.FAILED
        return {**described(self.config, self.address, state), "requests": self.ctx.requests,
                "by_status": {str(k): v for k, v in sorted(self.ctx.by_status.items())},
                "auth_failures": self.authenticator.failures, "auth_throttled": self.authenticator.throttled,
                **self.committer.status()}

"""Who is asking: session cookies, CSRF tokens and flash messages of the operator console.

- A user logs in once with the name and password of ``ombridge user add``; the password is
  checked by the listener's :class:`~bridge.web.auth.Authenticator` (same users, same scrypt
  check, same throttling of failures per address). The answer is a session cookie holding a
  random session id (256 bits). The event core keeps the session in ``console_sessions`` under
  the sha256 of that id (never the id itself): whose it is, and until when. So any node behind a
  load balancer knows it (docs/multinode.md), and it outlives a restart of the supervisor.
  ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``, ``Secure`` when the listener speaks TLS. A
  session ends after :data:`SESSION_SECONDS`, at logout, when the user is removed, and when their
  password changes after the login (``users.updated_at``).
- HTTP Basic credentials are accepted too, for reading pages and their JSON twins with curl.
- Every POST carries a CSRF token: an HMAC keyed with the session id, which only the session's
  own browser holds (the cookie is HttpOnly), so every node can check it and no page can forge
  it. A POST without it or with a wrong one is refused with 403 before anything else happens.
  The login form has its own token, double-submitted in a short-lived cookie.
- Flash messages (the answer of an action, shown on the next page) are signed with a key of this
  process: behind a load balancer without affinity, a message may not show when the next page
  comes from another node. Nothing else depends on which node answers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ... import store
from ...store import transaction
from ..auth import Authenticator, Throttled

SESSION_COOKIE = "ombridge_session"
LOGIN_COOKIE = "ombridge_login"
FLASH_COOKIE = "ombridge_flash"
SESSION_SECONDS = 12 * 3600
FLASH_MAX = 3000  # characters of a message carried to the next page (perl's message fits)
COOKIE_PATH = "/ui"
KNOWN_MAX = 1000  # sessions remembered for an outage of the event core
KNOWN_GRACE = 120.0  # seconds before an outage a session must have been confirmed in, to be kept


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


Core = Callable[..., Awaitable[Any]]  # (fn, *args): fn(conn, *args) on the event core, off the event loop


class Sessions:
    """Opens, checks and ends console sessions (in the event core); signs flash messages and CSRF
    tokens with a key of the listener's (shared by its processes)."""

    def __init__(self, authenticator: Authenticator, core: Core, clock: Any = time.time,
                 key: bytes | None = None) -> None:
        self.auth = authenticator
        self.core = core
        self.clock = clock
        self._key = key or secrets.token_bytes(32)  # (one for every listener process: given)
        # Sessions this process found valid, with when they expire: while the event core cannot
        # be reached (and so nobody can log out, be removed or change a password either) the
        # console still knows who is logged in, and shows its outage page instead of a login.
        self._known: dict[str, tuple[str, float, float]] = {}  # digest -> (user, expires, confirmed at)
        self._failing_since: float | None = None

    # -- signing ----------------------------------------------------------------------------------

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.digest(self._key, purpose.encode() + b"\0" + data, "sha256")

    def sign(self, purpose: str, value: dict[str, Any]) -> str:
        """``value`` as JSON, signed for ``purpose`` (a cookie of one kind cannot pass as another)."""
        payload = json.dumps(value, separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._mac(purpose, payload))

    def unsign(self, purpose: str, token: str | None) -> dict[str, Any] | None:
        """The value of a token signed by :meth:`sign` for ``purpose``, or None if it is not one."""
        if not token or "." not in token:
            return None
        payload_text, _, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(purpose, payload)):
            return None
        try:
            value = json.loads(payload)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    # -- sessions ---------------------------------------------------------------------------------

    async def login(self, name: str, password: str, address: str) -> str | None:
        """A session cookie value when ``name``/``password`` are a user's, else None (and the
        failure is counted and throttled like a failed Basic login: :class:`Throttled` while the
        address must wait, the password unchecked)."""
        # The Authenticator checks Basic headers; building one keeps one password check, one
        # cache and one throttle for both ways in.
        header = b"Basic " + base64.b64encode(name.encode() + b":" + password.encode())
        user = await self._check(header, address)
        if user is None:
            return None
        session_id = _b64(secrets.token_bytes(32))
        opened = await self.core(open_session, _digest(session_id), user, self.clock())
        return session_id if opened else None

    async def identify(self, request: Request) -> tuple[str, str] | None:
        """(user, session id) of a valid session cookie, or (user, "") for valid Basic credentials
        (:class:`Throttled` for Basic credentials from an address that must wait)."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            user = await self._session_user(_digest(session_id))
            return (user, session_id) if user is not None else None
        header = request.headers.get("authorization")
        if header and header[:6].lower() == "basic ":
            client = request.client
            user = await self._check(header.encode("latin-1"), client.host if client else "?")
            if user is not None:
                return user, ""
        return None

    async def _session_user(self, digest: str) -> str | None:
        now = self.clock()
        try:
            found = await self.core(session_user, digest, now)
        except store.failures():
            # The event core is away: a session confirmed here shortly before the outage began is
            # taken as it was then (a logout elsewhere before that would have been seen).
            self._failing_since = self._failing_since or now
            user, expires, confirmed = self._known.get(digest, ("", 0.0, 0.0))
            if not user or expires <= now or confirmed < self._failing_since - KNOWN_GRACE:
                raise
            return user
        self._failing_since = None
        if found is None:
            self._known.pop(digest, None)
            return None
        if len(self._known) >= KNOWN_MAX and digest not in self._known:
            self._known.pop(next(iter(self._known)))
        self._known[digest] = (found[0], found[1], now)
        return found[0]

    async def _check(self, header: bytes, address: str) -> str | None:
        user, wait = await self.auth.attempt(header, address)
        if wait:
            raise Throttled(wait)
        return user

    async def end(self, session_id: str) -> None:
        """Log out: the session is refused from now on, even if its cookie was copied."""
        if session_id:
            self._known.pop(_digest(session_id), None)
            await self.core(end_session, _digest(session_id), self.clock())

    # -- CSRF -------------------------------------------------------------------------------------

    def csrf_token(self, session_id: str) -> str:
        """The token every form of this session carries (empty for Basic clients: they cannot POST)."""
        return _b64(hmac.digest(session_id.encode(), b"ombridge csrf", "sha256")) if session_id else ""

    def csrf_ok(self, session_id: str, token: str | None) -> bool:
        """Whether a POSTed token is this session's."""
        return bool(session_id and token) and hmac.compare_digest(str(token), self.csrf_token(session_id))

    def login_token(self) -> str:
        """A random token for the login form, also set as a cookie (double submit)."""
        return _b64(secrets.token_bytes(16))

    # -- flash messages ---------------------------------------------------------------------------

    def flash(self, response: Response, ok: bool, text: str, secure: bool) -> None:
        """Carry one message (the answer of an action) to the next page the browser shows."""
        if len(text) > FLASH_MAX:
            text = text[:FLASH_MAX] + " ..."
        set_cookie(response, FLASH_COOKIE, self.sign("flash", {"ok": ok, "text": text}), secure, max_age=60)

    def read_flash(self, request: Request) -> dict[str, Any] | None:
        """The message carried to this page, if any (the page then deletes the cookie)."""
        return self.unsign("flash", request.cookies.get(FLASH_COOKIE))


def set_cookie(response: Response, name: str, value: str, secure: bool, max_age: int | None = None) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, under /ui, Secure when TLS is on."""
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, secure=secure, httponly=True,
                        samesite="strict")


# -- the console_sessions table (this module is its only user) -------------------------------------

def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(conn: Any, digest: str, user: str, at: float) -> bool:
    """Store a new session of ``user`` (False when the user was removed meanwhile); sessions
    that ended or expired a day ago go."""
    with transaction(conn):
        conn.execute("DELETE FROM console_sessions WHERE expires_at < ?", (at - 86400,))
        return conn.execute("INSERT INTO console_sessions (id, user_name, created_at, expires_at) "
                            "SELECT ?, name, ?, ? FROM users WHERE name = ?",
                            (digest, at, at + SESSION_SECONDS, user)).rowcount == 1


def session_user(conn: Any, digest: str, at: float) -> tuple[str, float] | None:
    """Whose session this is and until when, while it holds: not ended, not expired, the user
    still there with the password they logged in with."""
    row = conn.execute("SELECT s.user_name, s.expires_at FROM console_sessions s JOIN users u ON u.name = s.user_name "
                       "WHERE s.id = ? AND s.ended_at IS NULL AND s.expires_at > ? AND u.updated_at <= s.created_at",
                       (digest, at)).fetchone()
    return (row[0], row[1]) if row else None


def end_session(conn: Any, digest: str, at: float) -> None:
    """Mark a session ended (logged out)."""
    with transaction(conn):
        conn.execute("UPDATE console_sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (at, digest))

"""Who is asking: signed session cookies, CSRF tokens and flash messages of the operator console.

- A user logs in once with the name and password of ``ombridge user add``; the password is
  checked by the listener's :class:`~bridge.web.auth.Authenticator` (same users, same scrypt
  check, same throttling of failures per address). The answer is a session cookie: the user
  name, a random session id, when it was issued and a fingerprint of the user's stored hash,
  signed with HMAC-SHA256 under a key that lives only in this process. ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/ui``, ``Secure`` when the listener speaks TLS. A session ends
  after :data:`SESSION_SECONDS`, at logout, when the supervisor restarts (new key), and when the
  user is removed or their password changed (the fingerprint no longer matches).
- HTTP Basic credentials are accepted too, for reading pages and their JSON twins with curl.
- Every POST carries a CSRF token: an HMAC of the session id under the same key. A POST without
  it or with a wrong one is refused with 403 before anything else happens. The login form has
  its own token, double-submitted in a short-lived cookie.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..auth import Authenticator

SESSION_COOKIE = "ombridge_session"
LOGIN_COOKIE = "ombridge_login"
FLASH_COOKIE = "ombridge_flash"
SESSION_SECONDS = 12 * 3600
FLASH_MAX = 3000  # characters of a message carried to the next page (perl's message fits)
COOKIE_PATH = "/ui"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Signs and checks the console's cookies and tokens with one per-process key."""

    def __init__(self, authenticator: Authenticator, clock: Any = time.time) -> None:
        self.auth = authenticator
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._ended: dict[str, float] = {}  # session id -> when it would have expired (logged out)

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

    def _fingerprint(self, stored_hash: str) -> str:
        return _b64(self._mac("hash", stored_hash.encode()))[:22]

    # -- sessions ---------------------------------------------------------------------------------

    async def login(self, name: str, password: str, address: str) -> str | None:
        """A session cookie value when ``name``/``password`` are a user's, else None (and the
        failure is counted and throttled like a failed Basic login)."""
        # The Authenticator checks Basic headers; building one keeps one password check, one
        # cache and one throttle for both ways in.
        header = b"Basic " + base64.b64encode(name.encode() + b":" + password.encode())
        user = await self.auth.check(header, address)
        stored = self.auth.users().get(user) if user else None
        if user is None or stored is None:
            return None
        return self.sign("session", {"u": user, "s": _b64(secrets.token_bytes(16)), "t": self.clock(),
                                     "h": self._fingerprint(stored)})

    async def identify(self, request: Request) -> tuple[str, str] | None:
        """(user, session id) of a valid session cookie, or (user, "") for valid Basic credentials."""
        session = self.unsign("session", request.cookies.get(SESSION_COOKIE))
        if session is not None:
            stored = self.auth.users().get(str(session.get("u")))
            fresh = self.clock() - float(session.get("t", 0)) < SESSION_SECONDS
            if stored is not None and fresh and hmac.compare_digest(str(session.get("h")), self._fingerprint(stored)) \
                    and str(session.get("s")) not in self._ended:
                return str(session["u"]), str(session["s"])
            return None
        header = request.headers.get("authorization")
        if header and header[:6].lower() == "basic ":
            client = request.client
            user = await self.auth.check(header.encode("latin-1"), client.host if client else "?")
            if user is not None:
                return user, ""
        return None

    def end(self, session_id: str) -> None:
        """Log out: the session is refused from now on, even if its cookie was copied."""
        now = self.clock()
        self._ended = {sid: until for sid, until in self._ended.items() if until > now}  # expired anyway
        if session_id:
            self._ended[session_id] = now + SESSION_SECONDS

    # -- CSRF -------------------------------------------------------------------------------------

    def csrf_token(self, session_id: str) -> str:
        """The token every form of this session carries (empty for Basic clients: they cannot POST)."""
        return _b64(self._mac("csrf", session_id.encode())) if session_id else ""

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

"""HTTP Basic authentication for every path but ``/healthz``, as a small ASGI middleware.

- Users and their scrypt hashes come from the event core (``ombridge user ...``), re-read at most
  once a second, so adding, removing or changing a user takes effect within a second.
- A password is checked with scrypt once (in a worker thread, at most two at a time, so checks
  never stall the event loop). A credential that matched is then remembered as a MAC (keyed
  BLAKE2b) under a key that lives only in this process, together with the hash it matched: a later request with
  the same credential costs one HMAC; a changed or removed user invalidates it. Passwords are
  never kept, logged or written.
- Wrong or missing credentials answer 401 with ``WWW-Authenticate: Basic``. Failures are counted
  per client address (at most :data:`MAX_ADDRESSES` addresses remembered, forgotten after
  :data:`FORGET_AFTER` seconds): after :data:`FREE_FAILURES` failures every further attempt from
  that address waits, doubling up to :data:`MAX_DELAY` seconds, before it is even checked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import users

log = logging.getLogger("ombridge.web")

REALM = "ombridge"
REFRESH = 1.0
CACHE_SIZE = 1024
MAX_ADDRESSES = 4096
FORGET_AFTER = 600.0
FREE_FAILURES = 3
FIRST_DELAY = 0.5
MAX_DELAY = 8.0
PUBLIC = frozenset({"/healthz"})


class FailureThrottle:
    """Failures per client address, bounded in memory; :meth:`delay` grows with them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failed(self, address: str) -> int:
        """Count a failure; returns how many this address has now."""
        count = self.count(address) + 1
        self._seen[address] = (count, self.clock())
        self._seen.move_to_end(address)
        while len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)
        return count

    def succeeded(self, address: str) -> None:
        """Forget the address's failures."""
        self._seen.pop(address, None)

    def count(self, address: str) -> int:
        """Failures remembered for ``address``."""
        seen = self._seen.get(address)
        if seen is None:
            return 0
        if self.clock() - seen[1] > FORGET_AFTER:
            del self._seen[address]
            return 0
        return seen[0]

    def delay(self, address: str) -> float:
        """Seconds the next attempt from ``address`` waits before it is checked."""
        over = self.count(address) - FREE_FAILURES
        return 0.0 if over < 0 else min(MAX_DELAY, FIRST_DELAY * 2 ** over)

    def __len__(self) -> int:
        return len(self._seen)


class Authenticator:
    """Checks Basic credentials against the users table, remembering the ones that matched."""

    def __init__(self, load: Callable[[], dict[str, str]], clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self.clock = clock
        self._users: dict[str, str] = {}
        self._loaded_at = -1e9
        self._key = secrets.token_bytes(32)
        self._matched: OrderedDict[bytes, str] = OrderedDict()
        self._checks = asyncio.Semaphore(2)
        self.throttle = FailureThrottle(clock)
        self.failures = 0

    def users(self) -> dict[str, str]:
        """name -> hash, re-read when older than :data:`REFRESH` seconds."""
        at = self.clock()
        if at - self._loaded_at >= REFRESH:
            self._users = self._load()
            self._loaded_at = at
        return self._users

    async def check(self, header: bytes | None, address: str) -> str | None:
        """The user name when the ``Authorization`` header holds valid credentials, else None."""
        delay = self.throttle.delay(address)
        if delay:
            await asyncio.sleep(delay)
        name, password = _credentials(header)
        if name is not None and password is not None:
            stored = self.users().get(name)
            # keyed BLAKE2b (a MAC, built into Python): ~1 µs, where hmac with OpenSSL's sha256
            # costs ~15 µs of algorithm lookup on every call
            token = hashlib.blake2b(name.encode() + b"\0" + password, key=self._key, digest_size=32).digest()
            if stored is not None and self._matched.get(token) == stored:
                self._matched.move_to_end(token)
                self.throttle.succeeded(address)
                return name
            async with self._checks:
                ok = await asyncio.to_thread(users.verify_password, password, stored or users.DUMMY_HASH)
            if ok and stored is not None:
                self._matched[token] = stored
                while len(self._matched) > CACHE_SIZE:
                    self._matched.popitem(last=False)
                self.throttle.succeeded(address)
                return name
        self.failures += 1
        count = self.throttle.failed(address)
        log.warning("authentication failed from %s (user %r, failure %d)", address, name, count)
        return None


def _credentials(header: bytes | None) -> tuple[str | None, bytes | None]:
    if not header or not header[:6].lower() == b"basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
        name, colon, password = decoded.partition(b":")
        return name.decode("utf-8"), password if colon else None
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, None


class BasicAuthMiddleware:
    """ASGI middleware: 401 unless the request carries a valid user's credentials."""

    def __init__(self, app: Any, authenticator: Authenticator, public: frozenset[str] = PUBLIC) -> None:
        self.app = app
        self.auth = authenticator
        self.public = public

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        client = scope.get("client")
        user = await self.auth.check(header, client[0] if client else "?")
        if user is None:
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"29")]})
            await send({"type": "http.response.body", "body": b"authentication required (401)"})
            return
        scope["user"] = user
        await self.app(scope, receive, send)

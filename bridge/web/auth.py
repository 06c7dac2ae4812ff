"""HTTP Basic authentication for every path but ``/healthz``, as a small ASGI middleware.

- Users and their scrypt hashes come from the event core (``ombridge user ...``), re-read at most
  once a second, so adding, removing or changing a user takes effect within a second.
- A password is checked with scrypt once (in a worker thread, at most two at a time, so checks
  never stall the event loop). A credential that matched is then remembered as a MAC (keyed
  BLAKE2b) under a key that lives only in this process, together with the hash it matched: a later request with
  the same credential costs one HMAC; a changed or removed user invalidates it. Passwords are
  never kept, logged or written.
- Wrong or missing credentials answer 401 with ``WWW-Authenticate: Basic``. Wrong passwords are
  counted per client address (at most :data:`MAX_ADDRESSES` addresses remembered, forgotten after
  :data:`FORGET_AFTER` seconds): after :data:`FREE_FAILURES` failures (checks in flight count as
  failures), one check is admitted per interval that doubles up to :data:`MAX_DELAY` seconds;
  any other attempt is answered at once with 429 and ``Retry-After``, without a password check.
  Parallel guesses are so never checked faster than sequential ones, and no request sleeps.
  Credentials that matched before are answered at once even from a throttled address, so an
  attacker sharing OMi's gateway address does not slow OMi's forwarded closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import math
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


class Throttled(Exception):
    """Too many failed logins from the client's address: answered 429 with ``Retry-After``
    (``seconds``), without checking the password, by HTTP Basic and the console alike."""

    def __init__(self, wait: float) -> None:
        self.seconds = max(1, math.ceil(wait))
        super().__init__(f"too many failed logins from this address: wait {self.seconds} s, then try again")


class _Seen:
    __slots__ = ("failures", "last", "next_at", "in_flight")

    def __init__(self) -> None:
        self.failures, self.last, self.next_at, self.in_flight = 0, 0.0, 0.0, 0


def delay_after(failures: int) -> float:
    """Seconds between a check and the next one from an address with ``failures`` failures."""
    over = failures - FREE_FAILURES
    return 0.0 if over < 0 else min(MAX_DELAY, FIRST_DELAY * 2 ** over)


class FailureThrottle:
    """Failures per client address, bounded in memory.

    A password check is admitted (:meth:`admit`) only when the address's failures **and its
    checks in flight** leave room: the first :data:`FREE_FAILURES` at once, then one check per
    :func:`delay_after` seconds, reserved when it starts. So wrong guesses sent in parallel are
    never checked faster than sequential ones; the rest is refused at once (429), unhashed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def _entry(self, address: str, create: bool) -> _Seen | None:
        seen = self._seen.get(address)
        if seen is not None and not seen.in_flight and self.clock() - seen.last > FORGET_AFTER:
            del self._seen[address]
            seen = None
        if seen is None and create:
            seen = self._seen[address] = _Seen()
            while len(self._seen) > MAX_ADDRESSES:
                self._seen.popitem(last=False)
        return seen

    def admit(self, address: str) -> float:
        """0 when a check from ``address`` may start now (it is counted in flight until
        :meth:`release`), else the seconds until one may."""
        seen = self._entry(address, True)
        assert seen is not None
        now = self.clock()
        charged = seen.failures + seen.in_flight
        if charged >= FREE_FAILURES:
            if seen.next_at > now:
                return seen.next_at - now
            seen.next_at = now + delay_after(charged + 1)  # reserved: were this one wrong too
        seen.in_flight += 1
        seen.last = now
        return 0.0

    def release(self, address: str, ok: bool) -> None:
        """A check admitted by :meth:`admit` ended: a success forgets the address's failures."""
        seen = self._seen.get(address)
        if seen is None:
            return
        seen.in_flight = max(0, seen.in_flight - 1)
        if ok:
            del self._seen[address]
            return
        self._fail(address, seen)

    def failed(self, address: str) -> int:
        """Count a failure (of a check not admitted through :meth:`admit`); returns how many now."""
        seen = self._entry(address, True)
        assert seen is not None
        self._fail(address, seen)
        return seen.failures

    def _fail(self, address: str, seen: _Seen) -> None:
        now = self.clock()
        seen.failures += 1
        seen.last = now
        seen.next_at = max(seen.next_at, now + delay_after(seen.failures))
        self._seen.move_to_end(address)

    def succeeded(self, address: str) -> None:
        """Forget the address's failures."""
        self._seen.pop(address, None)

    def count(self, address: str) -> int:
        """Failures remembered for ``address``."""
        seen = self._entry(address, False)
        return 0 if seen is None else seen.failures

    def delay(self, address: str) -> float:
        """Seconds until a check from ``address`` may start (0: now)."""
        seen = self._entry(address, False)
        if seen is None or seen.failures + seen.in_flight < FREE_FAILURES:
            return 0.0
        return max(0.0, seen.next_at - self.clock())

    def __len__(self) -> int:
        return len(self._seen)


class Authenticator:
    """Checks Basic credentials against the users table, remembering the ones that matched."""

    def __init__(self, load: Callable[[], dict[str, str]], clock: Callable[[], float] = time.monotonic,
                 throttle: FailureThrottle | None = None) -> None:
        self._load = load
        self.clock = clock
        self._users: dict[str, str] = {}
        self._loaded_at = -1e9
        self._key = secrets.token_bytes(32)
        self._matched: OrderedDict[bytes, str] = OrderedDict()
        self._checks = asyncio.Semaphore(2)
        # (a listener process's throttle: the supervisor's, one for every process)
        self.throttle = FailureThrottle(clock) if throttle is None else throttle
        self._remote = throttle is not None  # its calls cross a pipe: made off the event loop
        self.failures = 0
        self.throttled = 0
        self._pending: dict[bytes, asyncio.Future[bool]] = {}  # credentials being checked now

    async def _verify(self, token: bytes, password: bytes, stored: str | None, address: str) -> tuple[bool, float]:
        """(ok, seconds to wait: > 0 when throttled, unchecked) of one scrypt check (at most two at
        a time), admitted by the throttle; its outcome shared with identical requests arriving
        meanwhile (from the admission on): 16 connections opened at once by OMi cost one check."""
        shared: asyncio.Future[tuple[bool, float]] = asyncio.get_running_loop().create_future()
        self._pending[token] = shared
        outcome = (False, 0.0)
        try:
            wait = await self._throttle(self.throttle.admit, address)
            if wait:
                outcome = (False, wait)
                return outcome
            ok = False
            try:
                async with self._checks:
                    ok = await asyncio.to_thread(users.verify_password, password, stored or users.DUMMY_HASH)
                ok = ok and stored is not None
            finally:
                await self._throttle(self.throttle.release, address, ok)
            outcome = (ok, 0.0)
            return outcome
        finally:
            del self._pending[token]
            shared.set_result(outcome)

    async def _throttle(self, call: Callable[..., Any], *args: Any) -> Any:
        # A listener process's throttle is the supervisor's (a call through a pipe, which may wait
        # for a busy supervisor): in a thread, so that the event loop serves the others meanwhile.
        return await asyncio.to_thread(call, *args) if self._remote else call(*args)

    def users(self) -> dict[str, str]:
        """name -> hash, re-read when older than :data:`REFRESH` seconds."""
        at = self.clock()
        if at - self._loaded_at >= REFRESH:
            self._users = self._load()
            self._loaded_at = at
        return self._users

    async def check(self, header: bytes | None, address: str) -> str | None:
        """The user name when the ``Authorization`` header holds valid credentials, else None
        (a throttled address too: see :meth:`attempt` for how long it waits)."""
        return (await self.attempt(header, address))[0]

    async def attempt(self, header: bytes | None, address: str) -> tuple[str | None, float]:
        """(user name or None, seconds to wait before trying again: > 0 when throttled, unchecked).

        Credentials that matched before are answered at once, even from a throttled address
        (they cost one MAC, not a check, and they prove nothing new); a missing or malformed
        header is a plain 401, not a guess. Anything else waits its turn at the throttle.
        """
        name, password = _credentials(header)
        if name is None or password is None:
            self.failures += 1
            return None, 0.0
        stored = self.users().get(name)
        # keyed BLAKE2b (a MAC, built into Python): ~1 µs, where hmac with OpenSSL's sha256
        # costs ~15 µs of algorithm lookup on every call
        token = hashlib.blake2b(name.encode() + b"\0" + password, key=self._key, digest_size=32).digest()
        if stored is not None and self._matched.get(token) == stored:
            self._matched.move_to_end(token)
            return name, 0.0
        shared = self._pending.get(token)
        if shared is not None:  # the same credentials are being checked: share that check's outcome
            ok, wait = await asyncio.shield(shared)
        else:
            ok, wait = await self._verify(token, password, stored, address)
        if wait:
            self.throttled += 1
            return None, wait
        if ok:
            assert stored is not None
            self._matched[token] = stored
            while len(self._matched) > CACHE_SIZE:
                self._matched.popitem(last=False)
            return name, 0.0
        self.failures += 1
        count = await self._throttle(self.throttle.count, address)
        log.warning("authentication failed from %s (user %r, failure %d)", address, name, count)
        return None, 0.0


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
        user, wait = await self.auth.attempt(header, client[0] if client else "?")
        if wait:
            throttled = Throttled(wait)
            body = f"{throttled}\n".encode()
            await send({"type": "http.response.start", "status": 429, "headers": [
                (b"retry-after", str(throttled.seconds).encode()), (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if user is None:
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"29")]})
            await send({"type": "http.response.body", "body": b"authentication required (401)"})
            return
        scope["user"] = user
        await self.app(scope, receive, send)

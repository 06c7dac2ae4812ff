"""Users of the HTTP listener: names and scrypt hashes in the event core's ``users`` table.

The event core is owner-only (``datafiles/`` 0700, the file 0600), so the hashes are too; no
password is ever stored, logged or accepted on a command line.

Why scrypt (the standard library's ``hashlib.scrypt``, OpenSSL's) and not argon2: it is
memory-hard, listed by OWASP as acceptable for password storage, and needs no compiled
dependency. Each hash records its own parameters (``scrypt$LOG2N$R$P$SALT$HASH``), so they can be
raised later without invalidating stored passwords. N = 2^15, r = 8, p = 1 costs 32 MiB and
about 0.1 s per check; the listener checks a password once and then remembers that it matched
(see :mod:`bridge.web.auth`), so this cost is paid on the first request and on failures only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from ..errors import NotFound, UsageError
from ..store import Connection, now, transaction

LOG2_N, R, P = 15, 8, 1
DKLEN = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: bytes, salt: bytes, log2n: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << log2n
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=2 * 128 * r * n * p + (1 << 20))


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password``, parameters included."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode("utf-8"), salt, LOG2_N, R, P, DKLEN)
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str | bytes, stored: str) -> bool:
    """True when ``password`` matches the stored hash (constant-time comparison)."""
    try:
        scheme, log2n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        pw = password.encode("utf-8") if isinstance(password, str) else password
        actual = _scrypt(pw, base64.b64decode(salt), int(log2n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A hash no password matches, checked when the user does not exist so that an unknown name costs
# as much time as a wrong password (no user enumeration by timing).
DUMMY_HASH = f"scrypt${LOG2_N}${R}${P}${_b64(b'ombridge-no-user')}${_b64(bytes(DKLEN))}"


def check_name(name: str) -> str:
    """Refuse a user name HTTP Basic cannot carry or an operator cannot type."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"bad user name {name!r}: 1 to 64 letters, digits and . _ @ -, "
                         "starting with a letter or digit")
    return name


def check_password(password: str) -> str:
    """Refuse a password that is too short, too long or holds control characters."""
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"the password is too long: at most {MAX_PASSWORD} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise UsageError("the password must not contain control characters")
    return password


def add_user(conn: Connection, name: str, password: str) -> None:
    """Create user ``name``; refused when it exists."""
    check_name(name)
    stored = hash_password(check_password(password))
    at = now()
    with transaction(conn, catalog=True):
        if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise UsageError(f"user {name} exists (change the password with: ombridge user passwd {name})")
        conn.execute("INSERT INTO users (name, hash, created_at, updated_at) VALUES (?, ?, ?, ?)",
                     (name, stored, at, at))


def set_password(conn: Connection, name: str, password: str) -> None:
    """Replace the password of user ``name``."""
    stored = hash_password(check_password(password))
    with transaction(conn, catalog=True):
        if not conn.execute("UPDATE users SET hash = ?, updated_at = ? WHERE name = ?", (stored, now(), name)).rowcount:
            raise NotFound(f"no user {name}")


def remove_user(conn: Connection, name: str) -> None:
    """Delete user ``name``."""
    with transaction(conn, catalog=True):
        if not conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
            raise NotFound(f"no user {name}")


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user's name and dates (never the hash)."""
    return [dict(r) for r in conn.execute("SELECT name, created_at, updated_at FROM users ORDER BY name")]


def hashes(conn: Connection) -> dict[str, str]:
    """name -> stored hash, for the listener."""
    return dict(conn.execute("SELECT name, hash FROM users").fetchall())

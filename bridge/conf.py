"""The one reader of a home's ``conf/ombridge.conf`` (TOML): each owner asks it for its table.

``[ombacksync]`` is read by :mod:`bridge.ombacksync.perlenv`, ``[store]`` by :mod:`bridge.store`, ``[omi]``
by :mod:`bridge.syncback.omisync`, ``[listen]`` by :mod:`bridge.web.config`; each checks its own values.
A file that cannot be read or parsed is one :class:`ConfError` naming the file and the reason,
for whichever asks first, and :func:`problem` says so for ``status``.

``ombridge send`` reads ``[store]`` on every call: a file that does not mention a table is not
parsed at all for it (no TOML parser imported on that path).
"""

from __future__ import annotations

import os

from .errors import UsageError

CONF_FILE = os.path.join("conf", "ombridge.conf")
TABLES = ("ombacksync", "omi", "listen", "store")


class ConfError(UsageError):
    """``conf/ombridge.conf`` cannot be read, is not TOML, or holds a bad value."""


def path(root: os.PathLike[str] | str) -> str:
    """The settings file of the home at ``root``."""
    return os.path.join(os.fspath(root), CONF_FILE)


def table(root: os.PathLike[str] | str, name: str) -> dict[str, object]:
    """Table ``[name]`` of the home's settings ({} when the file or the table is missing)."""
    try:
        with open(path(root), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfError(f"cannot read {path(root)}: {exc.strerror or exc}") from None
    if name.encode() not in data:
        return {}  # (not mentioned: nothing to parse)
    found = _parse(root, data).get(name, {})
    if not isinstance(found, dict):
        raise ConfError(f"{path(root)}: [{name}] must be a table")
    return found


def problem(root: os.PathLike[str] | str) -> str | None:
    """Why the home's settings file cannot be used (None when it can, or there is none): what
    ``status`` says, since the next start or restart would fail on it."""
    try:
        with open(path(root), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read {path(root)}: {exc.strerror or exc} (the next start or restart fails)"
    try:
        _parse(root, data)
    except ConfError as exc:
        return f"{exc} (the next start or restart fails)"
    return None


def _parse(root: os.PathLike[str] | str, data: bytes) -> dict[str, object]:
    import tomllib

    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfError(f"{path(root)} is not valid TOML: {exc}") from None
    unknown = set(parsed) - set(TABLES)  # (a typo'd table would be silently ignored)
    if unknown:
        raise ConfError(f"{path(root)}: unknown setting(s) {', '.join(sorted(unknown))} (known tables: "
                        f"{', '.join(f'[{t}]' for t in TABLES)})")
    return parsed

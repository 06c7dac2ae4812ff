"""Event filter expressions: a regular expression matched against a whole value, in linear time.

A filter such as ``KE.*`` on ``&APPC`` passes when the whole value matches. Python's ``re``
backtracks, so a pattern like ``(a+)+b`` can take seconds on a short value; filters are
therefore matched with RE2 (google-re2), whose time is linear in the value, and a pattern RE2
cannot run (backreferences, lookaround) is refused when the filter is added. The two shapes
almost every filter has — a plain word (``closed``) and a prefix (``KE.*``) — are matched without
a regex engine at all, so ``ombridge close`` never loads RE2.
"""

from __future__ import annotations

import functools
import re

from ..errors import UsageError

_PLAIN = re.compile(r"[A-Za-z0-9_\- /:@,;=!%~#<>']*")  # no character with a meaning in a regex


class Filter:
    """A compiled filter expression: ``matches(value)`` is True when the whole value matches."""

    __slots__ = ("regex", "_exact", "_prefix", "_compiled")

    def __init__(self, regex: str) -> None:
        self.regex = regex
        self._exact = self._prefix = self._compiled = None
        if _PLAIN.fullmatch(regex):
            self._exact = regex
        elif regex.endswith(".*") and _PLAIN.fullmatch(regex[:-2]):
            self._prefix = regex[:-2]
        else:
            self._compiled = _re2(regex)

    def matches(self, value: str) -> bool:
        """True when the whole ``value`` matches (``.`` does not match a newline)."""
        if self._exact is not None:
            return value == self._exact
        if self._prefix is not None:
            return value.startswith(self._prefix) and "\n" not in value
        return self._compiled.fullmatch(value) is not None


def _re2(regex: str):  # -> re2._Regexp
    import re2  # only for filters that need a regex engine (see the module docstring)

    options = re2.Options()
    options.log_errors = False  # our message says what is wrong, not RE2's logger on stderr
    try:
        return re2.compile(regex, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise UsageError(f"bad regular expression {regex!r}: {reason} (filters use RE2 syntax, matched in "
                         "linear time: no backreferences or lookaround)") from None


@functools.lru_cache(maxsize=4096)
def compile_filter(regex: str) -> Filter:
    """A filter expression, validated; :class:`UsageError` when RE2 cannot run it."""
    return Filter(regex)

"""The line protocol between the bridge and ``perl/ombridge_host.pl``.

One request a line on the child's STDIN, one reply a line on a descriptor of its own:

    bridge -> host   Init | Close <ID>
    host -> bridge   READY <perl version> | FATAL <message>   (once, at start)
                     OK | ERR <message>                       (one per request, in order)

What each call printed travels on the script's own STDOUT/STDERR pipe, split by the host's marks
(:class:`bridge.ombacksync.scriptlog.OutputReader`), never on this channel.

In ``<ID>`` and ``<message>``, ``%`` and every byte below 0x20 or equal to 0x7F is written as
``%XX``; every other byte passes as is, so any ID reaches ``OMBackSync`` byte-identical.
The host script documents the same at its top; docs/protocol.md is the long form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ProtocolError, UsageError
from ..outputtext import text_of

_NEEDS_ESCAPE = re.compile(rb"[\x00-\x1f\x7f%]")
_ESCAPED = re.compile(rb"%([0-9A-Fa-f]{2})")


def escape(raw: bytes) -> bytes:
    """Escape ``%`` and control bytes as ``%XX`` so that ``raw`` fits on one protocol line."""
    if _NEEDS_ESCAPE.search(raw) is None:
        return raw
    return _NEEDS_ESCAPE.sub(lambda m: b"%%%02X" % m[0][0], raw)


def unescape(text: bytes) -> bytes:
    """Undo :func:`escape`."""
    return _ESCAPED.sub(lambda m: bytes((int(m[1], 16),)), text)


def id_bytes(close_id: str | bytes) -> bytes:
    """The bytes of an ID as the script will see them; an empty ID is refused.

    A ``str`` is encoded as UTF-8 with ``surrogateescape``, so an argument that was not valid
    UTF-8 on the command line reaches perl as the very bytes the shell passed.
    """
    raw = close_id if isinstance(close_id, bytes) else close_id.encode("utf-8", "surrogateescape")
    if not raw:
        raise UsageError("an ID must not be empty")
    return raw


def close_request(close_id: str | bytes) -> bytes:
    """The request line (with its newline) that closes ``close_id``."""
    return b"Close " + escape(id_bytes(close_id)) + b"\n"


INIT_REQUEST = b"Init\n"


@dataclass(frozen=True)
class Reply:
    """One reply: ``ok`` with no message, or an error with perl's message; and the tail of
    what the call printed."""

    ok: bool
    message: str | None = None
    output: str = ""


OK = Reply(True)


def parse_replies(lines: list[bytes], pid: int | None = None) -> tuple[list[Reply], ProtocolError | None]:
    """The replies in ``lines`` and the error of the first line that is not the protocol."""
    replies = []
    for line in lines:
        try:
            replies.append(parse_reply(line, pid))
        except ProtocolError as exc:
            return replies, exc
    return replies, None


def parse_reply(line: bytes, pid: int | None = None) -> Reply:
    """Parse one reply line (without its newline); anything unexpected is a :class:`ProtocolError`."""
    if line == b"OK":
        return OK
    if line.startswith(b"ERR "):
        return Reply(False, decode_message(line[4:]))
    raise ProtocolError(line, pid)


def parse_greeting(line: bytes, pid: int | None = None) -> tuple[bool, str]:
    """Parse the first line: ``(True, perl version)`` for READY, ``(False, message)`` for FATAL."""
    if line.startswith(b"READY "):
        return True, line[6:].decode("ascii", "replace")
    if line.startswith(b"FATAL "):
        return False, decode_message(line[6:])
    raise ProtocolError(line, pid)


def decode_message(text: bytes) -> str:
    """A message from perl as text, read as the script's output is (:func:`bridge.ombacksync.scriptlog.text_of`:
    UTF-8 where valid, other bytes as Latin-1)."""
    return text_of(unescape(text))

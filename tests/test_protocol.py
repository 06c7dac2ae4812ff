"""The line protocol's escaping, parsing and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import protocol
from bridge.errors import ProtocolError, UsageError


@given(st.binary())
def test_escape_round_trips_and_fits_one_line(raw: bytes) -> None:
    escaped = protocol.escape(raw)
    assert b"\n" not in escaped and b"\r" not in escaped
    assert protocol.unescape(escaped) == raw


@given(st.text())
def test_str_ids_become_their_utf8_bytes(text: str) -> None:
    if text:
        assert protocol.id_bytes(text) == text.encode("utf-8", "surrogateescape")


def test_escape_leaves_plain_and_utf8_alone() -> None:
    assert protocol.escape("ticket 42 ü ✓".encode()) == "ticket 42 ü ✓".encode()
    assert protocol.escape(b"50%\r\n") == b"50%25%0D%0A"


def test_empty_id_is_refused() -> None:
    with pytest.raises(UsageError, match="empty"):
        protocol.close_request("")


def test_surrogate_escaped_argv_bytes_survive() -> None:
    raw = b"\xff\xfeid"
    assert protocol.id_bytes(raw.decode("utf-8", "surrogateescape")) == raw


@pytest.mark.parametrize("line", [b"", b"ok", b"OK ", b"ERR", b"READY 5", b"garbage"])
def test_unexpected_reply_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.parse_reply(line)


def test_replies_and_greetings_parse() -> None:
    assert protocol.parse_reply(b"OK").ok
    err = protocol.parse_reply(b"ERR died at x line 3.%0A")
    assert not err.ok and err.message == "died at x line 3.\n"
    assert protocol.parse_greeting(b"READY 5.36.0") == (True, "5.36.0")
    assert protocol.parse_greeting(b"FATAL no%25") == (False, "no%")
    with pytest.raises(ProtocolError):
        protocol.parse_greeting(b"OK")


def test_an_out_line_joins_the_reply_after_it_only() -> None:
    parser = protocol.ReplyParser(pid=7)
    replies, garbage = parser.parse([b"OUT line 1%0Aline 2%0A", b"ERR no", b"OK", b"OUT \xe2\x9c\x93%0A"])
    assert garbage is None
    assert replies == [protocol.Reply(False, "no", "line 1\nline 2\n"), protocol.OK]
    (ok,), _ = parser.parse([b"OK"])  # an OUT at the end of one read waits for its reply in the next
    assert ok.output == "\u2713\n"
    replies, garbage = parser.parse([b"OK", b"OUTPUT", b"OK"])
    assert replies == [protocol.OK] and isinstance(garbage, ProtocolError)


def test_a_tail_cut_inside_a_character_drops_the_stray_bytes() -> None:
    assert protocol.decode_output("✓ done\n".encode()[1:]) == " done\n"

"""The line protocol's escaping, parsing and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import ProtocolError, UsageError
from bridge.ombacksync import protocol


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


def test_replies_stop_at_the_first_line_that_is_not_the_protocol() -> None:
    replies, garbage = protocol.parse_replies([b"ERR no", b"OK", b"OUT line%0A", b"OK"], pid=7)
    assert replies == [protocol.Reply(False, "no"), protocol.OK]
    assert isinstance(garbage, ProtocolError) and garbage.pid == 7  # OUT lines are gone from the protocol


def test_messages_read_as_output_is_read_latin1_where_not_utf8() -> None:
    assert protocol.decode_message("St%C3%B6rung".encode()) == "Störung"
    assert protocol.decode_message(b"St\xf6rung caf\xc3\xa9") == "Störung café"

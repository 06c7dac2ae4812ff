"""Output bytes as text, by one rule wherever ombridge shows what a script or a program printed
(the log, an attempt's output tail, a perl error message): UTF-8 where the bytes are valid UTF-8,
each other byte as Latin-1 (ISO-8859-1), the charset of the European scripts of the connector's
age. A Latin-1 ``St\\xf6rung`` reads "Störung" everywhere. (A module of its own, stdlib
``codecs`` only: ``ombridge send`` imports it when it delivers to a synchronized subscriber.)
"""

from __future__ import annotations

import codecs

_LATIN1 = "ombridge-latin1"


def _as_latin1(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return exc.object[exc.start:exc.end].decode("latin-1"), exc.end


codecs.register_error(_LATIN1, _as_latin1)


def text_of(data: bytes, cut: bool = False) -> str:
    """Output bytes as text: UTF-8 where they are valid UTF-8, each other byte as Latin-1. A tail
    that was ``cut`` from longer output may begin inside a UTF-8 character: its first bytes, up to
    three continuation bytes, are dropped (they would read as Latin-1 symbols)."""
    if cut:
        skip = 0
        while skip < 3 and skip < len(data) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", _LATIN1)

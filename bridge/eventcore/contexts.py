"""Context variables: columns of a table row as extra ``&VAR``s of an event.

The seed's "table substitution variables": for events whose topic matches a pattern, the row of
a table whose columns equal some of the key's fields supplies every other column as a variable
(``&APAPNM`` from the application table for an event keyed by ``APPL``, say). The table lives in
the event core's file or in another SQLite file. Variables are looked up when the event is sent and
stored with it, so event filters and the actions run later see the same values. Key fields win
over context columns of the same name.
"""

from __future__ import annotations

import json
import os

from .. import store
from ..errors import NotFound, UsageError
from ..names import FIELD_RE, RESERVED_FIELDS, check_pattern, value_text
from ..store import Connection, Row, dialect, now, transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


_quote = dialect.quote


def _open(db_path: str | None, conn: Connection) -> Connection:
    if not db_path:
        return conn
    try:
        return store.open_readonly(db_path)
    except store.failures() as exc:
        raise UsageError(f"cannot open {db_path}: {exc}") from exc


def _columns(source: Connection, table: str) -> list[str]:
    try:
        return dialect.of(source).columns(source, table)
    except store.failures() as exc:
        raise UsageError(f"cannot read table {table}: {exc}") from exc


def add_context(conn: Connection, pattern: str, table: str, matches: Mapping[str, str],
                db_path: str | None = None) -> int:
    """Declare a context: for events of ``pattern``, the row of ``table`` where each
    ``matches`` column equals the key field it is paired with. Returns its id."""
    check_pattern(pattern)
    if not matches:
        raise UsageError("a context needs at least one --match KEYFIELD=COLUMN")
    if db_path:
        db_path = os.path.abspath(db_path)
        if not os.path.isfile(db_path):
            raise UsageError(f"no SQLite file at {db_path}")
    source = _open(db_path, conn)
    try:
        columns = _columns(source, table)
    finally:
        if source is not conn:
            source.close()
    if not columns:
        raise UsageError(f"no table {table} in {db_path or 'the event core'}")
    for field, column in matches.items():
        if not FIELD_RE.fullmatch(field):
            raise UsageError(f"bad key field {field!r} in --match")
        if column not in columns:
            raise UsageError(f"table {table} has no column {column} (it has {', '.join(columns)})")
    if "*" not in pattern:
        row = conn.execute("SELECT key_fields FROM topics WHERE name = ?", (pattern,)).fetchone()
        if row is None:
            raise NotFound(f"topic {pattern} is not defined")
        missing = [f for f in matches if f not in json.loads(row[0])]
        if missing:
            raise UsageError(f"topic {pattern} has no key field(s) {', '.join(missing)}")
    with transaction(conn, catalog=True):
        return int(conn.execute("INSERT INTO contexts (pattern, table_name, db_path, matches, created_at) "
                                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                                (pattern, table, db_path, json.dumps(dict(matches)), now())).fetchone()[0])


def list_contexts(conn: Connection) -> list[dict[str, Any]]:
    """Every declared context."""
    return [{**dict(r), "matches": json.loads(r["matches"])} for r in conn.execute("SELECT * FROM contexts ORDER BY id")]


def remove_context(conn: Connection, context_id: int) -> None:
    """Forget a context (events already stored keep their variables)."""
    with transaction(conn, catalog=True):
        if not conn.execute("DELETE FROM contexts WHERE id = ?", (context_id,)).rowcount:
            raise NotFound(f"no context {context_id}")


def for_patterns(conn: Connection, patterns: Sequence[str]) -> list[Row]:
    """The contexts declared for any of ``patterns`` (the candidates of one topic)."""
    return conn.execute(f"SELECT * FROM contexts WHERE pattern IN ({','.join('?' * len(patterns))}) ORDER BY id",
                        list(patterns)).fetchall()


def variables(conn: Connection, patterns: Sequence[str]) -> set[str]:
    """The context variables events of ``patterns`` can get: the columns of their context tables."""
    found: set[str] = set()
    for ctx in for_patterns(conn, patterns):
        source = None
        try:
            source = _open(ctx["db_path"], conn)
            found.update(c for c in _columns(source, ctx["table_name"])
                         if FIELD_RE.fullmatch(c) and c not in RESERVED_FIELDS)
        except UsageError:
            continue  # the file or table went away: it gives no variables now
        finally:
            if source is not None and source is not conn:
                source.close()
    return found


def lookup(conn: Connection, declared: Sequence[Row], key: Mapping[str, Any],
           sources: dict[str, Connection]) -> dict[str, str]:
    """The context variables of one event (``sources`` caches connections to other files)."""
    found: dict[str, str] = {}
    for ctx in declared:
        matches = json.loads(ctx["matches"])
        if any(field not in key for field in matches):
            continue
        path = ctx["db_path"]
        if path and path not in sources:
            sources[path] = _open(path, conn)
        source = sources[path] if path else conn
        where = " AND ".join(f"{_quote(column)} = ?" for column in matches.values())
        values = [key[f] for f in matches]
        if not dialect.of(source).column_affinity:  # a text parameter takes the column's type there, as
            values = [v if v is None else value_text(v) for v in values]  # SQLite's affinity does: 5 = '5'
        try:
            cur = source.execute(f"SELECT * FROM {_quote(ctx['table_name'])} WHERE {where} LIMIT 1", values)
            row = cur.fetchone()
        except store.failures():
            continue  # the table changed or went away: no variables from it
        if row is None:
            continue
        for (column, *_), value in zip(cur.description, row):
            if (value is None or isinstance(value, bytes) or column in RESERVED_FIELDS or column in key
                    or not FIELD_RE.fullmatch(column)):
                continue
            found.setdefault(column, value_text(value))
    return found

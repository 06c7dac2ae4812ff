"""What the event core knows: topics, subscribers, subscriber topics and event filters.

Every function validates its input and refuses a bad one with a :class:`UsageError` (or
:class:`NotFound`) before anything is written. The vocabulary is the seed's: a Topic has a Key
(JSON fields), a Subscriber runs an action, a Subscriber Topic attaches it to a qualified
(``task/add``) or generic (``task/*``, ``*``) topic, an Event Filter is a regex on a variable.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import NotFound, UsageError
from ..model import ActionKind, DeliveryStatus
from ..names import (
    RESERVED_FIELDS,
    check_field_name,
    check_pattern,
    check_topic_name,
    variable_name,
)
from ..store import Connection, Row, now, transaction
from . import contexts, deliveries, ledger, pauses, substitution
from .events import candidate_patterns
from .filters import compile_filter

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 5


# -- topics ---------------------------------------------------------------------------------------


def add_topic(conn: Connection, name: str, key_fields: list[str], description: str = "") -> None:
    """Define a topic with the names of its key fields."""
    check_topic_name(name)
    for field in key_fields:
        check_field_name(field)
    if len(set(key_fields)) != len(key_fields):
        raise UsageError(f"topic {name}: a key field is named twice")
    with transaction(conn, catalog=True):
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (name,)).fetchone():
            raise UsageError(f"topic {name} is already defined")
        _insert_topic(conn, name, key_fields, description)


def _insert_topic(conn: Connection, name: str, key_fields: list[str], description: str,
                  ignore_existing: bool = False) -> None:
    conn.execute(
        "INSERT INTO topics (name, description, key_fields, created_at) VALUES (?, ?, ?, ?)"
        + (" ON CONFLICT DO NOTHING" if ignore_existing else ""), (name, description, json.dumps(key_fields), now()))


def get_topic(conn: Connection, name: str) -> dict[str, Any]:
    """One topic as a dict (key_fields decoded); :class:`NotFound` if it is not defined."""
    row = conn.execute("SELECT * FROM topics WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"topic {name} is not defined (define it with: ombridge topic add {name} --key FIELD)")
    topic = dict(row)
    topic["key_fields"] = json.loads(topic["key_fields"])
    return topic


def list_topics(conn: Connection) -> list[dict[str, Any]]:
    """All topics, by name, each with the number of subscriber topics naming it exactly."""
    rows = conn.execute(
        "SELECT t.*, (SELECT count(*) FROM subscriber_topics st WHERE st.pattern = t.name) AS subscribers "
        "FROM topics t ORDER BY t.name"
    ).fetchall()
    return [{**dict(r), "key_fields": json.loads(r["key_fields"])} for r in rows]


def remove_topic(conn: Connection, name: str, force: bool = False) -> None:
    """Remove a topic; refused while subscribers are attached to it by name, unless ``force``
    (which detaches them). Stored events keep their topic."""
    with transaction(conn, catalog=True):
        get_topic(conn, name)
        system = [r[0] for r in conn.execute(
            "SELECT DISTINCT st.subscriber_id FROM subscriber_topics st JOIN subscribers s ON s.id = st.subscriber_id "
            "WHERE st.pattern = ? AND s.system = 1 ORDER BY 1", (name,))]
        if system:
            raise UsageError(f"topic {name} belongs to system subscriber {system[0]} (events of it reach "
                             "OMBackSync): it cannot be removed")
        users = [r[0] for r in conn.execute(
            "SELECT DISTINCT subscriber_id FROM subscriber_topics WHERE pattern = ? ORDER BY 1", (name,))]
        if users and not force:
            raise UsageError(
                f"topic {name} is used by subscriber(s) {', '.join(map(str, users))}: "
                "detach them first, or remove with --force"
            )
        for (st_id,) in conn.execute("SELECT id FROM subscriber_topics WHERE pattern = ?", (name,)).fetchall():
            _delete_subscriber_topic(conn, st_id)
        conn.execute("DELETE FROM topics WHERE name = ?", (name,))


# -- subscribers ----------------------------------------------------------------------------------


class Subscriber(NamedTuple):
    """One subscriber row."""

    id: int
    description: str
    system: bool
    disabled: bool
    action: ActionKind
    target: str
    timeout: float
    retries: int

    @classmethod
    def from_row(cls, row: Row) -> Subscriber:
        """Build from a ``subscribers`` row."""
        return cls(row["id"], row["description"], bool(row["system"]), bool(row["disabled"]),
                   ActionKind(row["action"]), row["target"], row["timeout"], row["retries"])


def _check_target(action: ActionKind, target: str) -> str:
    if action is ActionKind.COMMAND:
        if not target.strip():
            raise UsageError("the command string is empty")
    elif action is ActionKind.PROGRAM:
        if not os.path.isabs(target):
            raise UsageError(f"program {target!r} must be an absolute path")
        if not (os.path.isfile(target) and os.access(target, os.X_OK)):
            raise UsageError(f"program {target} is not an executable file")
    elif action is ActionKind.WEB:
        if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", target):
            raise UsageError(f"bad URL {target!r}: use http://HOST/PATH or https://HOST/PATH")
        if "@" in target.split("/", 3)[2]:
            # A password in the URL would be shown by every listing and kept in every log line.
            raise UsageError("the URL holds credentials (user:password@): they would be shown by `subscriber "
                             "list`; give them as a header instead: --secret-header Authorization (its value is "
                             "asked for, stored owner-only and never listed)")
    return target


def _check_action(action: ActionKind, target: str, allow_nested_shell: bool) -> None:
    """The checks of a subscriber's action and target (adding one, or changing it)."""
    _check_target(action, target)
    nested = substitution.nested_shell(target) if action is ActionKind.COMMAND else None
    if nested and not allow_nested_shell:
        raise UsageError(
            f"the command passes &VARs to a second shell ({nested!r}), which would parse key values as shell "
            "syntax: use an event program (--program PATH: it gets TOPIC and KEY_JSON as arguments; "
            "`ombridge key get \"$2\" NAME` reads a field), or --allow-nested-shell if the values are trusted")


def add_subscriber(conn: Connection, action: ActionKind, target: str, *, description: str = "",
                   timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                   allow_nested_shell: bool = False, secret_headers: dict[str, str] | None = None) -> int:
    """Create a subscriber; returns its id.

    A command whose &VARs stand after a construct that re-parses text in a second shell
    (``sh -c``, ``ssh``, ``su -c``, ``eval``) is refused unless ``allow_nested_shell``: there a
    key value could become shell syntax (see :mod:`bridge.eventcore.substitution`).
    """
    _check_action(action, target, allow_nested_shell)
    secrets = _check_secret_headers(action, secret_headers or {})
    with transaction(conn, catalog=True):
        sid = _insert_subscriber(conn, action, target, description, timeout, retries, system=False)
        if secrets:
            conn.execute("UPDATE subscribers SET secret_headers = ? WHERE id = ?", (json.dumps(secrets), sid))
        return sid


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def _check_secret_headers(action: ActionKind, headers: dict[str, str]) -> dict[str, str]:
    if headers and action is not ActionKind.WEB:
        raise UsageError("secret headers are for web subscribers (--url)")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise UsageError(f"bad header name {name!r}")
        if not value or any(c in value for c in "\r\n\x00"):
            raise UsageError(f"the value of header {name} must be one non-empty line")
    return headers


def _insert_subscriber(conn: Connection, action: ActionKind, target: str, description: str,
                       timeout: float, retries: int, system: bool) -> int:
    _check_limits(timeout, retries)
    return int(conn.execute(
        "INSERT INTO subscribers (description, system, disabled, action, target, timeout, retries, created_at) "
        "VALUES (?, ?, 0, ?, ?, ?, ?, ?) RETURNING id",
        (description, int(system), action.value, target, float(timeout), int(retries), now()),
    ).fetchone()[0])


MAX_TIMEOUT = 7 * 86400.0
MAX_RETRIES = 1000


def _check_limits(timeout: float | None, retries: int | None) -> None:
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:  # nan and inf fail too
        raise UsageError(f"the timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    if retries is not None and not 0 <= retries <= MAX_RETRIES:
        raise UsageError(f"retries must be from 0 to {MAX_RETRIES}")


def system_subscriber(conn: Connection, action: ActionKind) -> int | None:
    """The id of the system subscriber of ``action``, if it exists."""
    row = conn.execute("SELECT id FROM subscribers WHERE system = 1 AND action = ? ORDER BY id LIMIT 1",
                       (action.value,)).fetchone()
    return None if row is None else int(row[0])


def ensure_system_subscriber(conn: Connection, action: ActionKind, *, description: str, timeout: float,
                             retries: int, topics: list[tuple[str, list[str], str]], pattern: tuple[str, str],
                             filters: list[tuple[str, str, str]]) -> int:
    """Create a built-in subscriber with its topics, subscriber topic and filters unless it exists;
    returns its id. ``topics`` are (name, key fields, description); ``pattern`` (subscriber topic,
    description); ``filters`` (variable, regex, description). One transaction: a concurrent creator is seen, not duplicated."""
    sid = system_subscriber(conn, action)
    names = [name for name, _, _ in topics]
    known = conn.execute(f"SELECT count(*) FROM topics WHERE name IN ({','.join('?' * len(names))})",
                         names).fetchone()[0]
    if sid is not None and known == len(names):
        return sid
    with transaction(conn, catalog=True):
        # (a home made by an older ombridge lacks the newer built-in topics: they are added)
        for name, fields, topic_description in topics:
            _insert_topic(conn, name, fields, topic_description, ignore_existing=True)
        sid = system_subscriber(conn, action)
        if sid is not None:  # it existed, or another process created it meanwhile
            return sid
        sid = _insert_subscriber(conn, action, "", description, timeout, retries, system=True)
        st = conn.execute("INSERT INTO subscriber_topics (subscriber_id, pattern, synchronized, description) "
                          "VALUES (?, ?, 0, ?) RETURNING id", (sid, *pattern)).fetchone()[0]
        for variable, regex, filter_description in filters:
            conn.execute("INSERT INTO event_filters (subscriber_topic_id, variable, regex, description) "
                         "VALUES (?, ?, ?, ?)", (st, variable, regex, filter_description))
        return sid


def get_subscriber(conn: Connection, subscriber_id: int) -> Subscriber:
    """One subscriber; :class:`NotFound` if there is none with that id."""
    row = conn.execute("SELECT * FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
    if row is None:
        raise NotFound(f"no subscriber {subscriber_id}")
    return Subscriber.from_row(row)


def list_subscribers(conn: Connection) -> list[dict[str, Any]]:
    """All subscribers with their topic patterns and open/failed delivery counts."""
    rows = conn.execute("SELECT * FROM subscribers ORDER BY id").fetchall()
    topics: dict[int, list[str]] = {}  # (joined here: group_concat is SQLite's, string_agg PostgreSQL's)
    for sid, pattern, sync in conn.execute("SELECT subscriber_id, pattern, synchronized FROM subscriber_topics "
                                           "ORDER BY id"):
        topics.setdefault(sid, []).append(pattern + (" (sync)" if sync else ""))
    counts = ledger.per_subscriber(conn)
    empty = {DeliveryStatus.OPEN.value: 0, DeliveryStatus.FAILED.value: 0}
    paused = pauses.paused(conn)
    return [{**_shown(r, paused), "topics": ", ".join(topics[r["id"]]) if r["id"] in topics else None,
             **counts.get(r["id"], empty)} for r in rows]


def _shown(row: Row, paused: dict[int, tuple[float, str]]) -> dict[str, Any]:
    # A subscriber as listings show it: the names of its secret headers, never their values; since
    # when and by whom it is paused (None, None: it runs).
    shown = dict(row)
    shown["secret_headers"] = sorted(json.loads(shown["secret_headers"])) if shown.get("secret_headers") else []
    shown["paused_at"], shown["paused_by"] = paused.get(row["id"], (None, None))
    return shown


def show_subscriber(conn: Connection, subscriber_id: int) -> dict[str, Any]:
    """A subscriber with its topics and their filters."""
    sub = _shown(conn.execute("SELECT * FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
                 or _missing(subscriber_id), pauses.paused(conn))
    sub["topics"] = []
    for st in conn.execute("SELECT * FROM subscriber_topics WHERE subscriber_id = ? ORDER BY id", (subscriber_id,)):
        filters = conn.execute(
            "SELECT variable, regex, description FROM event_filters WHERE subscriber_topic_id = ? ORDER BY id",
            (st["id"],)).fetchall()
        sub["topics"].append({**dict(st), "filters": [dict(f) for f in filters]})
    return sub


def _missing(subscriber_id: int) -> Any:
    raise NotFound(f"no subscriber {subscriber_id}")


def update_subscriber(conn: Connection, subscriber_id: int, *, timeout: float | None = None,
                      retries: int | None = None, description: str | None = None) -> None:
    """Change a subscriber's timeout, retry limit or description (system subscribers too)."""
    _check_limits(timeout, retries)
    with transaction(conn, catalog=True):
        get_subscriber(conn, subscriber_id)
        _set_settings(conn, subscriber_id, timeout, retries, description)


def _set_settings(conn: Connection, subscriber_id: int, timeout: float | None, retries: int | None,
                  description: str | None) -> None:
    for column, value in (("timeout", timeout), ("retries", retries), ("description", description)):
        if value is not None:
            conn.execute(f"UPDATE subscribers SET {column} = ? WHERE id = ?", (value, subscriber_id))


def disabled_system(conn: Connection) -> list[tuple[int, str]]:
    """(id, action) of each disabled system subscriber: the events it would take are refused."""
    return [(r[0], r[1]) for r in conn.execute("SELECT id, action FROM subscribers WHERE system = 1 AND disabled = 1 "
                                               "ORDER BY id")]


def set_disabled(conn: Connection, subscriber_id: int, disabled: bool) -> None:
    """Enable or disable a subscriber (a disabled one is not matched by new events)."""
    with transaction(conn, catalog=True):
        get_subscriber(conn, subscriber_id)
        conn.execute("UPDATE subscribers SET disabled = ? WHERE id = ?", (int(disabled), subscriber_id))


def remove_subscriber(conn: Connection, subscriber_id: int, force: bool = False) -> None:
    """Remove a subscriber with its topics, filters and delivery history.

    Refused for system subscribers, and while it has open deliveries unless ``force``.
    """
    with transaction(conn, catalog=True):
        sub = get_subscriber(conn, subscriber_id)
        if sub.system:
            raise UsageError(f"subscriber {subscriber_id} is a system subscriber and cannot be removed "
                             "(its deliveries can be purged; it can be disabled, but then closes are refused)")
        deliveries.delete_for_subscriber(conn, subscriber_id, force=force)
        pauses.forget(conn, subscriber_id)
        for (st_id,) in conn.execute("SELECT id FROM subscriber_topics WHERE subscriber_id = ?",
                                     (subscriber_id,)).fetchall():
            _delete_subscriber_topic(conn, st_id)
        conn.execute("DELETE FROM subscribers WHERE id = ?", (subscriber_id,))


def purge_subscriber(conn: Connection, subscriber_id: int) -> int:
    """Drop a subscriber's open deliveries (status ``purged``); returns how many."""
    with transaction(conn, catalog=True):
        get_subscriber(conn, subscriber_id)
        return deliveries.purge(conn, subscriber_id)


# -- subscriber topics and filters ----------------------------------------------------------------


def attach_topic(conn: Connection, subscriber_id: int, pattern: str, synchronized: bool = False,
                 description: str = "") -> int:
    """Attach a subscriber to a qualified or generic topic; returns the subscriber topic id.

    A command subscriber's &VARs must all be variables of the events of ``pattern``.
    """
    check_pattern(pattern)
    with transaction(conn, catalog=True):
        sub = get_subscriber(conn, subscriber_id)
        if sub.system:
            raise UsageError(f"subscriber {subscriber_id} is a system subscriber: its topics are fixed")
        if "*" not in pattern:
            get_topic(conn, pattern)  # a qualified topic must be defined: catches typos
        if sub.action is ActionKind.COMMAND:
            _check_variables(conn, pattern, substitution.references(sub.target), "the command uses",
                             variables_of(conn, pattern))
        if conn.execute("SELECT 1 FROM subscriber_topics WHERE subscriber_id = ? AND pattern = ?",
                        (subscriber_id, pattern)).fetchone():
            raise UsageError(f"subscriber {subscriber_id} is already attached to {pattern}")
        return int(conn.execute(
            "INSERT INTO subscriber_topics (subscriber_id, pattern, synchronized, description) VALUES (?, ?, ?, ?) "
            "RETURNING id", (subscriber_id, pattern, int(synchronized), description)).fetchone()[0])


def variables_of(conn: Connection, pattern: str) -> set[str]:
    """Every &VAR an event of topic ``pattern`` (qualified or generic) can have: the key fields of
    the topics it matches, their context variables, and TOPIC, EVENT and KEY."""
    topics = [(r[0], json.loads(r[1])) for r in conn.execute("SELECT name, key_fields FROM topics")]
    prefix = pattern[:-1]  # "task/*" -> "task/", "*" -> ""
    matched = [(name, fields) for name, fields in topics
               if name == pattern or ("*" in pattern and name.startswith(prefix) and name != prefix[:-1])]
    found = set(RESERVED_FIELDS)
    patterns = {pattern}
    for name, fields in matched:
        found.update(fields)
        patterns.update(candidate_patterns(name))
    return found | contexts.variables(conn, sorted(patterns))


def _check_variables(conn: Connection, pattern: str, names: list[str], what: str, known: set[str]) -> None:
    unknown = [n for n in dict.fromkeys(names) if n not in known]
    if unknown:
        raise UsageError(
            f"{what} {', '.join('&' + n for n in unknown)}, which events of {pattern} do not have; "
            f"their variables are {', '.join('&' + n for n in sorted(known))} "
            "(write '& ' with a space for the shell's own &)")


def _subscriber_topic_id(conn: Connection, subscriber_id: int, pattern: str) -> int:
    row = conn.execute("SELECT id FROM subscriber_topics WHERE subscriber_id = ? AND pattern = ?",
                       (subscriber_id, pattern)).fetchone()
    if row is None:
        get_subscriber(conn, subscriber_id)
        raise NotFound(f"subscriber {subscriber_id} is not attached to {pattern}")
    return int(row[0])


def _delete_subscriber_topic(conn: Connection, st_id: int) -> None:
    conn.execute("DELETE FROM event_filters WHERE subscriber_topic_id = ?", (st_id,))
    conn.execute("DELETE FROM subscriber_topics WHERE id = ?", (st_id,))


def detach_topic(conn: Connection, subscriber_id: int, pattern: str) -> None:
    """Detach a subscriber from a topic pattern (its filters go with it)."""
    with transaction(conn, catalog=True):
        st_id = _subscriber_topic_id(conn, subscriber_id, pattern)
        if get_subscriber(conn, subscriber_id).system:
            raise UsageError(f"subscriber {subscriber_id} is a system subscriber: its topics are fixed")
        _delete_subscriber_topic(conn, st_id)


def add_filter(conn: Connection, subscriber_id: int, pattern: str, variable: str, regex: str,
               description: str = "") -> None:
    """Add an event filter: the subscriber topic fires only when every filter's regex matches
    the whole value of its variable (``KE.*`` = starts with KE)."""
    name = variable_name(variable)
    compile_filter(regex)
    with transaction(conn, catalog=True):
        st_id = _subscriber_topic_id(conn, subscriber_id, pattern)
        if get_subscriber(conn, subscriber_id).system:
            raise UsageError(f"subscriber {subscriber_id} is a system subscriber: its filters are fixed")
        # a filter sees the key fields, the context and TOPIC (not EVENT or KEY: see events.filter_variables)
        _check_variables(conn, pattern, [name], "the filter tests", variables_of(conn, pattern) - {"EVENT", "KEY"})
        if conn.execute("SELECT 1 FROM event_filters WHERE subscriber_topic_id = ? AND variable = ?",
                        (st_id, name)).fetchone():
            raise UsageError(f"subscriber {subscriber_id} already filters &{name} on {pattern}: remove it first")
        conn.execute(
            "INSERT INTO event_filters (subscriber_topic_id, variable, regex, description) VALUES (?, ?, ?, ?)",
            (st_id, name, regex, description))


def remove_filter(conn: Connection, subscriber_id: int, pattern: str, variable: str) -> None:
    """Remove the filter on ``variable`` from a subscriber topic."""
    name = variable_name(variable)
    with transaction(conn, catalog=True):
        st_id = _subscriber_topic_id(conn, subscriber_id, pattern)
        if get_subscriber(conn, subscriber_id).system:
            raise UsageError(f"subscriber {subscriber_id} is a system subscriber: its filters are fixed")
        cur = conn.execute("DELETE FROM event_filters WHERE subscriber_topic_id = ? AND variable = ?", (st_id, name))
        if not cur.rowcount:
            raise NotFound(f"subscriber {subscriber_id} has no filter on &{name} for {pattern}")


# -- the operator console's edit of a subscriber (bridge/web/console) ----------------------------


def edit_subscriber(conn: Connection, subscriber_id: int, action: ActionKind | None = None,
                    target: str | None = None, *, allow_nested_shell: bool = False, timeout: float | None = None,
                    retries: int | None = None, description: str | None = None,
                    secret_headers: dict[str, str] | None = None, drop_headers: Sequence[str] = ()) -> None:
    """Change what a subscriber runs and its settings, all or nothing: every value is checked
    before anything is written. A new command, program or URL (``action`` and ``target``, None:
    unchanged) is checked as :func:`add_subscriber` checks it (an unchanged one is not checked
    again); a system subscriber's action is fixed. ``secret_headers`` are set (a web
    subscriber's), ``drop_headers`` removed."""
    _check_limits(timeout, retries)
    current = get_subscriber(conn, subscriber_id)
    action = ActionKind(current.action) if action is None else action
    target = current.target if target is None else target
    changed = (action.value, target) != (current.action, current.target)
    if changed:
        if current.system:
            raise UsageError(f"subscriber {subscriber_id} is a system subscriber: its action is fixed")
        if action is ActionKind.BACKSYNC:
            raise UsageError("the backsync is a built-in action: a subscriber runs a command, a program or a URL")
        _check_action(action, target, allow_nested_shell)
    (stored,) = conn.execute("SELECT secret_headers FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
    headers: dict[str, str] = json.loads(stored) if stored else {}
    unknown = [name for name in drop_headers if name not in headers]
    if unknown:
        raise UsageError(f"subscriber {subscriber_id} has no secret header {', '.join(unknown)}")
    headers = {k: v for k, v in headers.items() if k not in drop_headers} | (secret_headers or {})
    _check_secret_headers(action, headers)
    with transaction(conn, catalog=True):
        if changed:
            conn.execute("UPDATE subscribers SET action = ?, target = ? WHERE id = ?",
                         (action.value, target, subscriber_id))
        if secret_headers or drop_headers:
            conn.execute("UPDATE subscribers SET secret_headers = ? WHERE id = ?",
                         (json.dumps(headers) if headers else None, subscriber_id))
        _set_settings(conn, subscriber_id, timeout, retries, description)

"""Sending events: validate the key, match subscriber topics, apply filters, store.

``send`` writes the event and one open subscriber event per matching subscriber in one
transaction, and stores nothing when nobody listens unless forced. A synchronized subscriber's
delivery is stored already claimed by the sender and returned with the result (``pending``): the
sender delivers it before going on, through :mod:`bridge.delivery.sending` (the delivery layer; this
module runs no action). One nobody delivers is taken by the Event Manager once its lease runs out.

Matching looks up only the patterns that can match a topic (``a/b/c`` -> ``a/b/c``, ``a/b/*``,
``a/*``, ``*``) through an index, so its cost does not grow with subscriber topics that cannot match.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from json.decoder import scanstring

from ..errors import BridgeError, NotFound, UsageError
from ..model import ActionKind, Lane, Settlement
from ..names import FIELD_RE, RESERVED_FIELDS, check_topic_name, value_text
from ..store import Connection, Row, now, transaction
from . import contexts
from .deliveries import Delivery, enqueue
from .filters import Filter, compile_filter

# `ombridge send` imports this module on every call: typing, the actions and the delivery queue
# are imported only where they are needed (see bench/bench_events.py for the startup figure).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any


    KeyInput = str | Mapping[str, Any]

MAX_DEPTH = 8  # events in a chain of deliveries (loop protection)
MAX_KEY_BYTES = 65536


class Pending:
    """A synchronized delivery, stored already claimed by its sender (attempt 1, under a lease):
    what the sender delivers before it goes on (:func:`bridge.delivery.sending.deliver`)."""

    __slots__ = ("delivery_id", "event_id", "topic", "key", "key_json", "depth", "context", "subscriber_id",
                 "action", "target", "timeout", "retries", "secret_headers")

    def __init__(self, delivery_id: int, event_id: int, prepared: _Prepared, sub: _Subscription, depth: int) -> None:
        self.delivery_id, self.event_id, self.depth = delivery_id, event_id, depth
        self.topic, self.key, self.key_json, self.context = prepared.topic, prepared.key, prepared.key_json, \
            prepared.context
        self.subscriber_id, self.action, self.target = sub.subscriber_id, ActionKind(sub.action), sub.target
        self.timeout, self.retries, self.secret_headers = sub.timeout, sub.retries, sub.secret_headers

    def __repr__(self) -> str:
        return f"Pending(delivery_id={self.delivery_id}, subscriber_id={self.subscriber_id})"


class SendResult:
    """What ``send`` did: ``event_id`` (None when nobody listened), ``deliveries`` created,
    ``pending``, the synchronized deliveries the sender still has to make, and ``synchronized``,
    a ``(subscriber id, settlement)`` pair per synchronized call made (by :mod:`bridge.delivery.sending`).

    (A plain class, not a dataclass or namedtuple: building those costs ``ombridge send`` ~1 ms.)
    """

    __slots__ = ("event_id", "deliveries", "synchronized", "pending")

    def __init__(self, event_id: int | None, deliveries: int,
                 synchronized: tuple[tuple[int, Settlement], ...] = (), pending: tuple[Pending, ...] = ()) -> None:
        self.event_id = event_id
        self.deliveries = deliveries
        self.synchronized = synchronized
        self.pending = pending

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SendResult) and (self.event_id, self.deliveries, self.synchronized) == (
            other.event_id, other.deliveries, other.synchronized)

    def __repr__(self) -> str:
        return f"SendResult({self.event_id!r}, {self.deliveries!r}, {self.synchronized!r})"

    def failed_synchronized(self) -> list[int]:
        """The synchronized subscribers whose call before returning did not succeed."""
        return [sid for sid, status in self.synchronized if status != Settlement.DONE]


class _Subscription:
    __slots__ = ("subscriber_topic_id", "subscriber_id", "synchronized", "action", "target", "timeout", "retries",
                 "filters", "secret_headers", "lane", "disabled")

    def __init__(self, subscriber_topic_id: int, subscriber_id: int, synchronized: bool, action: str, target: str,
                 timeout: float, retries: int, filters: tuple[tuple[str, Filter | _LegacyFilter], ...],
                 secret_headers: str | None = None, disabled: bool = False) -> None:
        self.subscriber_topic_id, self.subscriber_id, self.synchronized = subscriber_topic_id, subscriber_id, synchronized
        self.action, self.target, self.timeout, self.retries = action, target, timeout, retries
        self.filters = filters  # ((variable, compiled regex), ...)
        self.secret_headers = secret_headers  # JSON, for a synchronized web call
        self.lane = Lane.of(action)
        self.disabled = disabled  # only a system subscriber is looked up while disabled: it refuses


class SystemSubscriberDisabled(BridgeError):
    """An event a disabled system subscriber would take (a close for the backsync, a change for
    OMi's gateway): refused, nothing stored, because nothing would ever run it. Not bad input:
    the sender may send it again once the subscriber is enabled (HTTP 503, CLI exit 1)."""

    def __init__(self, subscriber_id: int, action: str, topic: str) -> None:
        what = {"backsync": "the backsync subscriber", "omi": "the sync back to OMi"}.get(action, "a system subscriber")
        super().__init__(f"{what} ({subscriber_id}) is disabled, so this {topic} event would reach nobody: "
                         f"nothing was stored; `ombridge subscriber enable {subscriber_id}` first")
        self.subscriber_id, self.action, self.topic = subscriber_id, action, topic


def _compiled(regex: str) -> Filter:
    try:
        return compile_filter(regex)
    except UsageError:
        # Stored before filters were checked against RE2: still matched, as then, by Python's re.
        return _LegacyFilter(regex)


class _LegacyFilter:
    __slots__ = ("regex",)

    def __init__(self, regex: str) -> None:
        self.regex = re.compile(regex)

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


# -- keys -----------------------------------------------------------------------------------------


def parse_key(key: KeyInput) -> dict[str, Any]:
    """A key as a dict of string/number fields; anything else is a :class:`UsageError`."""
    if isinstance(key, str):
        try:
            key = json.loads(key, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise UsageError(f"bad key JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if type(key) is not dict and not isinstance(key, Mapping):  # (a dict is the common case: no ABC check)
        raise UsageError('a key is a JSON object, e.g. {"APPC": "DEMO", "TASK": "T0123"}')
    for name, value in key.items():
        if name not in _GOOD_NAMES:
            _check_field_name(name)
        if type(value) is str:
            check_text(name, value)
        elif type(value) is not int:
            _check_value(name, value)
    return dict(key)


def _check_value(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        what = ("true or false" if isinstance(value, bool) else "null" if value is None
                else "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else "another value")
        raise UsageError(f"key field {name} must be a string or a number, not {what}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"key field {name} must be a finite number")
    if isinstance(value, str):
        check_text(name, value)


_GOOD_NAMES: set[str] = set()  # field names already found good (a burst repeats the same few)


def _check_field_name(name: object) -> None:
    if not isinstance(name, str) or not FIELD_RE.fullmatch(name):
        raise UsageError(f"bad key field {name!r}: use letters, digits and _")
    if name in RESERVED_FIELDS:
        raise UsageError(f"key field {name} is reserved: &{name} is set on every event")
    if len(_GOOD_NAMES) < 10_000:
        _GOOD_NAMES.add(name)


def check_text(name: str, value: str) -> None:
    """Refuse a key value no action could receive: one with NUL, or not valid UTF-8."""
    # Values travel through SQLite (UTF-8 text) and the environment of actions (no NUL there).
    if "\x00" in value:
        raise UsageError(f"key field {name} contains a NUL character, which no action could receive")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"key field {name} is not valid UTF-8 text") from exc


def _no_constant(name: str) -> None:
    raise UsageError(f"bad key JSON: {name} is not a number")


_KEY_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# What _KEY_JSON.encode builds anew for every call, built once (a burst encodes 100,000 keys):
# json's C encoder, with the same settings, for the flat keys parse_key lets through.
_encode_key = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _KEY_JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, True,
) if json.encoder.c_make_encoder else None  # type: ignore[attr-defined]


def canonical_key(key: Mapping[str, Any]) -> str:
    """The stored form of a key: compact JSON, UTF-8 kept as is."""
    text = "".join(_encode_key(key, 0)) if _encode_key else _KEY_JSON.encode(key)
    if len(text) * 4 > MAX_KEY_BYTES and len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UsageError(f"the key is larger than {MAX_KEY_BYTES} bytes")
    return text


def stored_field(key_json: str, name: str) -> str:
    """One field of a stored key as text ('' when missing), without parsing the whole key when
    the field is a string: the backsync reads the ID of thousands of Closes this way."""
    # A stored key is canonical (compact, flat, field names of letters, digits and _): there,
    # '{"NAME":"' or ',"NAME":"' can only be where that field's string value starts, since a
    # quote inside a string is escaped. scanstring (json's own, in C) decodes the value.
    for lead in ('{"', ',"'):
        at = key_json.find(f'{lead}{name}":"')
        if at >= 0:
            return scanstring(key_json, at + len(name) + 5)[0]
    return value_text(json.loads(key_json).get(name, ""))


def key_field(key: KeyInput, name: str) -> str:
    """One field of a key as text (the key-retrieval API); :class:`NotFound` when missing."""
    fields = parse_key(key)
    if name.startswith("&"):
        name = name[1:]
    if name not in fields:
        raise NotFound(f"the key has no field {name}")
    return value_text(fields[name])


def _require_fields(topic: str, key: Mapping[str, Any], key_fields: Sequence[str]) -> None:
    missing = [f for f in key_fields if f not in key]
    if missing:
        raise UsageError(f"the key of topic {topic} needs field(s) {', '.join(missing)}")


# -- matching -------------------------------------------------------------------------------------


def candidate_patterns(topic: str) -> list[str]:
    """Every subscriber topic that can match ``topic``, most specific first."""
    parts = topic.split("/")
    return [topic, *("/".join(parts[:i]) + "/*" for i in range(len(parts) - 1, 0, -1)), "*"]


def _subscriptions(conn: Connection, topic: str) -> list[_Subscription]:
    patterns = candidate_patterns(topic)
    rows = conn.execute(
        "SELECT st.id, st.subscriber_id, st.synchronized, st.pattern, s.action, s.target, s.timeout, s.retries, "
        "s.secret_headers, s.disabled, p.subscriber_id IS NOT NULL AS paused "
        "FROM subscriber_topics st JOIN subscribers s ON s.id = st.subscriber_id "
        "LEFT JOIN subscriber_pauses p ON p.subscriber_id = s.id "
        f"WHERE st.pattern IN ({','.join('?' * len(patterns))}) AND (s.disabled = 0 OR s.system = 1)",
        patterns,
    ).fetchall()
    filters: dict[int, list[tuple[str, Filter | _LegacyFilter]]] = {}
    if rows:
        ids = [r["id"] for r in rows]
        for f in conn.execute(
                f"SELECT subscriber_topic_id, variable, regex FROM event_filters "
                f"WHERE subscriber_topic_id IN ({','.join('?' * len(ids))}) ORDER BY id", ids):
            filters.setdefault(f[0], []).append((f[1], _compiled(f[2])))
    rank = {p: i for i, p in enumerate(patterns)}
    rows = sorted(rows, key=lambda r: (r["subscriber_id"], rank[r["pattern"]]))
    # A paused subscriber's synchronized call is not made by the sender: it waits, an ordinary
    # open delivery, for the resume (bridge/eventcore/pauses.py).
    return [_Subscription(r["id"], r["subscriber_id"], bool(r["synchronized"] and not r["paused"]), r["action"],
                          r["target"], r["timeout"], r["retries"], tuple(filters.get(r["id"], ())),
                          r["secret_headers"], bool(r["disabled"]))
            for r in rows]


def _passes(sub: _Subscription, variables: Mapping[str, str]) -> bool:
    for name, regex in sub.filters:
        value = variables.get(name)
        if value is None or not regex.matches(value):
            return False
    return True


def select_subscribers(subscriptions: Iterable[_Subscription], variables: Mapping[str, str]) -> list[_Subscription]:
    """One subscription per subscriber: its most specific topic whose filters all match.

    Raises :class:`SystemSubscriberDisabled` when a disabled system subscriber would take the
    event: stored, it would wait for nobody (a close OMi was told was taken, then never run).
    """
    chosen: dict[int, _Subscription] = {}
    for sub in subscriptions:
        if sub.subscriber_id not in chosen and _passes(sub, variables):
            if sub.disabled:
                raise SystemSubscriberDisabled(sub.subscriber_id, sub.action, variables["TOPIC"])
            chosen[sub.subscriber_id] = sub
    return list(chosen.values())


def filter_variables(topic: str, key: Mapping[str, Any]) -> dict[str, str]:
    """The variables an event filter can test: the key fields and TOPIC."""
    values = {name: value_text(v) for name, v in key.items()}
    values["TOPIC"] = topic
    return values


# -- sending --------------------------------------------------------------------------------------


def chain_from(environ: Mapping[str, str]) -> tuple[int | None, int]:
    """(parent event id, depth of a new event) from the environment of a delivery, if any."""
    try:
        parent = int(environ["OMBRIDGE_EVENT"])
        depth = int(environ.get("OMBRIDGE_DEPTH", "0")) + 1
    except (KeyError, ValueError):
        return None, 0
    return parent, depth


class _Prepared:
    __slots__ = ("topic", "key", "key_json", "context", "matches")

    def __init__(self, topic: str, key: dict[str, Any], key_json: str, context: dict[str, str],
                 matches: list[_Subscription]) -> None:
        self.topic, self.key, self.key_json, self.context, self.matches = topic, key, key_json, context, matches


class _Lookups:
    """What one send_many looks up once per topic (and connections to context files)."""

    __slots__ = ("fields", "subs", "contexts", "sources")

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.subs: dict[str, list[_Subscription]] = {}
        self.contexts: dict[str, list[Row]] = {}
        self.sources: dict[str, Connection] = {}

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def _prepare(conn: Connection, topic: str, key: KeyInput, seen: _Lookups) -> _Prepared:
    if topic not in seen.fields:
        check_topic_name(topic)
        row = conn.execute("SELECT key_fields FROM topics WHERE name = ?", (topic,)).fetchone()
        if row is None:
            raise NotFound(f"topic {topic} is not defined (define it with: ombridge topic add {topic} --key FIELD)")
        seen.fields[topic] = json.loads(row[0])
        seen.subs[topic] = _subscriptions(conn, topic)
        seen.contexts[topic] = contexts.for_patterns(conn, candidate_patterns(topic))
    fields = parse_key(key)
    _require_fields(topic, fields, seen.fields[topic])
    context = contexts.lookup(conn, seen.contexts[topic], fields, seen.sources) if seen.contexts[topic] else {}
    variables = {**context, **filter_variables(topic, fields)}
    matches = select_subscribers(seen.subs[topic], variables)
    return _Prepared(topic, fields, canonical_key(fields), context, matches)


def match(conn: Connection, topic: str, key: KeyInput) -> list[int]:
    """The subscribers an event would be delivered to; validates like :func:`send`, writes nothing."""
    seen = _Lookups()
    try:
        return [m.subscriber_id for m in _prepare(conn, topic, key, seen).matches]
    finally:
        seen.close()


def send_many(conn: Connection, items: Iterable[tuple[str, KeyInput]], force: bool = False, *,
              environ: Mapping[str, str] | None = None,
              on_stored: Callable[[], None] | None = None) -> list[SendResult]:
    """Store many events in one transaction (all or none); see :func:`send`."""
    prepared, parent, depth = _prepare_all(conn, items, environ)
    with transaction(conn):
        results, delivered = _store(conn, prepared, force, parent, depth)
    if on_stored and delivered:
        on_stored()
    return results


def store_many(conn: Connection, items: Iterable[tuple[str, KeyInput]], force: bool = False, *,
               environ: Mapping[str, str] | None = None) -> list[SendResult]:
    """:func:`send_many` inside the caller's open write transaction: for a caller that writes, in
    the same transaction, what must commit with the events (the OMi mapping of forwarded events,
    :mod:`bridge.web.forwarded`). The caller wakes the Event Manager once it has committed."""
    prepared, parent, depth = _prepare_all(conn, items, environ)
    return _store(conn, prepared, force, parent, depth)[0]


def _prepare_all(conn: Connection, items: Iterable[tuple[str, KeyInput]],
                 environ: Mapping[str, str] | None) -> tuple[list[_Prepared], int | None, int]:
    # Everything checked and matched before anything is written.
    parent, depth = chain_from(os.environ if environ is None else environ)
    if depth > MAX_DEPTH:
        raise UsageError(f"event chain too deep: this event would be at depth {depth} (limit {MAX_DEPTH}); "
                         f"a subscriber is probably sending the event that triggers it (parent event {parent})")
    seen = _Lookups()
    try:
        return [_prepare(conn, topic, key, seen) for topic, key in items], parent, depth
    finally:
        seen.close()


def _store(conn: Connection, prepared: list[_Prepared], force: bool, parent: int | None,
           depth: int) -> tuple[list[SendResult], bool]:
    # The writes, inside a transaction: (the results, whether deliveries were created).
    results: list[SendResult] = []
    rows: list[Delivery] = []
    synchronized: list[tuple[int, _Prepared, _Subscription]] = []  # (event id, event, subscription)
    sender = f"send:{os.getpid()}"
    at = now(conn)
    # The ids named explicitly, so that the rows go in with one statement (bridge/store/dialect.py).
    ids = iter(conn.dialect.reserve_ids(conn, "events", sum(1 for p in prepared if p.matches or force)))
    stored = []
    for p in prepared:
        if not p.matches and not force:
            results.append(SendResult(None, 0))
            continue
        event_id = next(ids)
        stored.append((event_id, p.topic, p.key_json, int(force), parent, depth, at,
                       json.dumps(p.context, ensure_ascii=False) if p.context else None))
        for m in p.matches:
            # A synchronized delivery is created already claimed by this sender (attempt 1,
            # under a lease), so the Event Manager cannot deliver it at the same time.
            sync = m.synchronized and m.action != ActionKind.BACKSYNC
            rows.append(Delivery(event_id, m.subscriber_id, m.subscriber_topic_id, m.timeout, m.lane,
                                 sender if sync else None))
            if sync:
                synchronized.append((event_id, p, m))
        results.append(SendResult(event_id, len(p.matches)))
    conn.dialect.insert_rows(conn, "events", "id, topic, key, forced, parent_id, depth, created_at, context",
                             stored)
    claimed_ids = enqueue(conn, rows, at)
    if synchronized:
        results = _with_pending(results, [Pending(se_id, event_id, p, m, depth)
                                          for se_id, (event_id, p, m) in zip(claimed_ids, synchronized)])
    return results, bool(rows)


def _with_pending(results: list[SendResult], pending: list[Pending]) -> list[SendResult]:
    by_event: dict[int, list[Pending]] = {}
    for p in pending:
        by_event.setdefault(p.event_id, []).append(p)
    return [SendResult(r.event_id, r.deliveries, pending=tuple(by_event.get(r.event_id or -1, ()))) for r in results]


def send(conn: Connection, topic: str, key: KeyInput, force: bool = False, **options: Any) -> SendResult:
    """Store one event: the topic must be defined and the key must carry its fields.

    Stores the event and one open subscriber event per matching subscriber, or nothing when
    nobody listens (unless ``force``). Raises :class:`UsageError` for bad input, before writing.
    Synchronized deliveries come back in ``pending``: :func:`bridge.delivery.sending.send` stores and
    makes them in one call.
    """
    return send_many(conn, [(topic, key)], force, **options)[0]


def list_events(conn: Connection, topic: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Events, newest first, with how many deliveries each has and how many are open."""
    from .ledger import per_event

    where, args = ("WHERE topic = ? ", [topic]) if topic else ("", [])
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM events {where}ORDER BY id DESC LIMIT ?", (*args, limit))]
    counts = per_event(conn, [r["id"] for r in rows])
    return [{**r, **counts[r["id"]]} for r in rows]


def prune(conn: Connection, cutoff: float, chunk: int) -> int:
    """Delete up to ``chunk`` events created before ``cutoff`` that have no delivery left, in one
    transaction; returns how many."""
    with transaction(conn):
        return conn.execute(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.created_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM subscriber_events se WHERE se.event_id = e.id) LIMIT ?)", (cutoff, chunk)).rowcount


# -- reads of the operator console (bridge/web/console) -----------------------------------------


def find_events(conn: Connection, *, topic: str | None = None, text: str | None = None,
                before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Events newest first, of ``topic`` when given, whose key holds ``text`` (case-insensitive),
    with ids below ``before`` (the next page starts below the last id shown)."""
    where, args = [], []
    if topic:
        where, args = [*where, "topic = ?"], [*args, topic]
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")  # (portable, not instr)
        where, args = [*where, "lower(key) LIKE lower(?) ESCAPE '\\'"], [*args, f"%{escaped}%"]
    if before is not None:
        where, args = [*where, "id < ?"], [*args, before]
    sql = "SELECT * FROM events " + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY id DESC LIMIT ?"
    return [dict(r) for r in conn.execute(sql, (*args, limit))]

"""OMi's Event Synchronization bodies: parse what OMi forwards, write what it expects back.

Everything is parsed with defusedxml: a DOCTYPE (and so any entity, internal or external) is
refused before a single entity is expanded. Element names are matched by their local name, so a
body in OMi's namespace (``http://www.hp.com/2009/software/opr/data_model``) and one without a
namespace read the same; answers are always written in OMi's namespace.

Mapping (docs/omi.md has the full table):

- ``<event_change>`` for ``/event_change/<id>`` -> key of ``event/update``: ``ID`` = the id from
  the URL (never from the body), one field per changed property (``property_name`` upper-cased:
  ``state`` -> ``STATE``, ``title`` -> ``TITLE``, ...; the value is ``current_value``, or the
  ``current_*`` element of group and user changes), ``CHANGED`` = the changed property names
  (comma-separated) and ``STATE`` = ``""`` when the state did not change; a custom attribute
  becomes ``CA_<NAME>`` (listed so in ``CHANGED``). Only ``STATE`` =
  ``closed`` passes the backsync filter, so only a close reaches ``OMBackSync('Close', ID)``.
- ``<event>`` / ``<event_list>`` for ``/event`` -> keys of ``omi/event``: ``ID`` = the external id
  answered (the first present of ``[omi] external_id``'s candidates: later changes of the event
  arrive at ``/event_change/<that id>``), ``OMI_ID`` = OMi's event id, every simple property
  upper-cased, plus ``NODE``, ``ASSIGNED_USER``, ``ASSIGNED_GROUP``, ``RELATED_CI`` and
  ``CA_<NAME>`` for custom attributes.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from ..errors import UsageError

NS = "http://www.hp.com/2009/software/opr/data_model"
MAX_VALUE = 8192  # characters kept of one property (an event key is bounded, 64 KiB)
MAX_FIELDS = 200
RESERVED = frozenset({"ID", "OMI_ID", "TOPIC", "EVENT", "KEY", "CHANGED"})
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class BadDocument(UsageError):
    """The body is not a document of the expected kind (answered with 400)."""


def parse(body: bytes) -> ET.Element:
    """Parse an XML body, refusing DTDs, entities and external references."""
    try:
        return SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden as exc:
        raise BadDocument("DOCTYPE declarations are refused") from exc
    except defusedxml.DefusedXmlException as exc:
        raise BadDocument(f"refused: {exc}") from exc
    except ET.ParseError as exc:
        raise BadDocument(f"malformed XML: {exc}") from exc
    except (ValueError, LookupError) as exc:  # e.g. an unknown encoding declaration
        raise BadDocument(f"unreadable XML: {exc}") from exc


def local(tag: Any) -> str:
    """An element's name without its namespace."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(el: ET.Element, *path: str) -> ET.Element | None:
    for name in path:
        for c in el:
            if local(c.tag) == name:
                el = c
                break
        else:
            return None
    return el


def text(el: ET.Element | None) -> str:
    """All text inside ``el``, stripped ('' for None)."""
    return "" if el is None else "".join(el.itertext()).strip()


def field_name(name: str) -> str:
    """A property name as a key field: upper-case letters, digits and _ (``assigned-user`` -> ``ASSIGNED_USER``)."""
    field = _NOT_NAME.sub("_", name).upper()
    if not field or field[0].isdigit():
        field = "_" + field
    return field


def _put(key: dict[str, str], name: str, value: str) -> None:
    if name in RESERVED:
        name = "OMI_" + name
    if len(key) < MAX_FIELDS:
        key[name] = value[:MAX_VALUE]


# -- event_change ---------------------------------------------------------------------------------


def change_key(event_id: str, root: ET.Element) -> dict[str, str]:
    """The ``event/update`` key for an ``<event_change>`` of event ``event_id``."""
    if local(root.tag) != "event_change":
        raise BadDocument(f"expected an <event_change> document, got <{local(root.tag)}>")
    props: dict[str, str] = {}
    changed: list[str] = []
    for change in _child(root, "changed_properties") or ():
        named = _property(change)
        if named is None:
            continue
        field, value, listed = named
        _put(props, field, value)
        changed.append(listed)
    key = {"ID": event_id, "STATE": props.pop("STATE", "")}
    key.update(props)
    key["CHANGED"] = ",".join(dict.fromkeys(changed))
    return key


def _property(change: ET.Element) -> tuple[str, str, str] | None:
    """(key field, value, name listed in CHANGED) of one changed property, None without a name.

    A custom attribute comes in two forms seen in the wild: its ``<name>`` beside
    ``<current_value>``, or ``<name>``/``<value>`` nested in ``<current_value>``; either becomes
    ``CA_<NAME>``, listed as such in ``CHANGED`` (``property_name`` is ``custom_attribute`` for all).
    """
    prop = text(_child(change, "property_name"))
    value_el = _child(change, "current_value")
    ca_name = text(_child(change, "name"))
    if not ca_name and value_el is not None and len(value_el):
        ca_name = text(_child(value_el, "name"))
        value_el = _child(value_el, "value")
    if ca_name:
        field = ca_field(ca_name)
        return field, text(value_el), field
    if not prop:
        return None
    if value_el is None:  # group and user changes: <current_group_name>, <current_user_name>
        value_el = next((c for c in change if local(c.tag).startswith("current_")), None)
    return field_name(prop), text(value_el), prop


def ca_field(name: str) -> str:
    """The key field of custom attribute ``name``: ``CA_<NAME>`` (``Customer`` -> ``CA_CUSTOMER``)."""
    return "CA_" + field_name(name).lstrip("_")


def change_answer(event_id: str) -> bytes:
    """The ``<event_change>`` OMi expects back: the event reference and no changes."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<event_change xmlns="{NS}"><event_ref><target_id>'
            f"{escape(event_id)}</target_id></event_ref><changed_properties/></event_change>").encode("utf-8")


# -- event, event_list ----------------------------------------------------------------------------

_NESTED = (
    ("NODE", (("node_ref", "node", "display_label"), ("node_ref", "node", "name"), ("node_hints", "dns_name"),
              ("node_hints", "hint"))),
    ("ASSIGNED_USER", (("assigned_user", "login_name"), ("assigned_user", "user_name"))),
    ("ASSIGNED_GROUP", (("assigned_group", "name"),)),
    ("RELATED_CI", (("related_ci", "configuration_item", "display_label"),
                    ("related_ci", "configuration_item", "name"))),
)


class ForwardedEvent:
    """One event OMi forwarded: OMi's id, the external id ombridge answers, its sequence number, its key."""

    __slots__ = ("omi_id", "external_id", "sequence_number", "key")

    def __init__(self, omi_id: str, external_id: str, sequence_number: str | None, key: dict[str, str]) -> None:
        self.omi_id, self.external_id, self.sequence_number, self.key = omi_id, external_id, sequence_number, key


DEFAULT_EXTERNAL_ID = ("original_id", "id")


def events(root: ET.Element, external_id: tuple[str, ...] = DEFAULT_EXTERNAL_ID) -> tuple[list[ForwardedEvent], bool]:
    """The events of an ``<event>`` or ``<event_list>`` document, and whether it was a list.

    ``external_id`` are the candidates of the external id, the first one present wins (``id``:
    OMi's event id; ``custom_attribute:NAME``; any other name: a simple element of the event);
    OMi's id when none is present.
    """
    kind = local(root.tag)
    if kind == "event":
        return [_event(root, external_id)], False
    if kind == "event_list":
        found = [_event(e, external_id) for e in root if local(e.tag) == "event"]
        if not found:
            raise BadDocument("the <event_list> holds no <event>")
        return found, True
    raise BadDocument(f"expected an <event> or <event_list> document, got <{kind}>")


def _event(el: ET.Element, candidates: tuple[str, ...]) -> ForwardedEvent:
    event_id = text(_child(el, "id"))
    if not event_id:
        raise BadDocument("an <event> without an <id>: OMi's event id is needed to recognise it when sent again")
    if "\x00" in event_id:
        raise BadDocument("the event id contains a NUL character")
    sequence = _child(el, "sequence_number")
    key: dict[str, str] = {}
    simple: dict[str, str] = {}
    for c in el:
        name = local(c.tag)
        if name in ("id", "sequence_number") or len(c):
            continue
        value = text(c)
        if value:
            simple.setdefault(name, value)
            _put(key, field_name(name), value)
    for field, paths in _NESTED:
        for path in paths:
            value = text(_child(el, *path))
            if value:
                _put(key, field, value)
                break
    attributes: dict[str, str] = {}
    for ca in (_child(el, "custom_attribute_list") or ()):
        name, value = text(_child(ca, "name")), text(_child(ca, "value"))
        if name:
            attributes.setdefault(name, value)
            _put(key, ca_field(name), value)
    external = _external_id(event_id, candidates, simple, attributes)
    if "\x00" in external:
        raise BadDocument("the external id contains a NUL character")
    key["ID"] = external
    key["OMI_ID"] = event_id
    return ForwardedEvent(event_id, external, text(sequence) if sequence is not None else None, key)


def _external_id(event_id: str, candidates: tuple[str, ...], simple: dict[str, str],
                 attributes: dict[str, str]) -> str:
    folded = {k.casefold(): v for k, v in attributes.items() if v}
    for candidate in candidates:
        if candidate == "id":
            return event_id
        if candidate.startswith("custom_attribute:"):
            name = candidate.split(":", 1)[1]
            value = attributes.get(name) or folded.get(name.casefold())
        else:
            value = simple.get(candidate)
        if value:
            return value[:MAX_VALUE]
    return event_id


def events_answer(forwarded: list[ForwardedEvent], as_list: bool) -> bytes:
    """The events echoed with their external id (the key's ``ID``: for a re-sent event, the one
    answered the first time) and sequence number, as OMi expects back."""
    parts = []
    for f in forwarded:
        seq = "" if f.sequence_number is None else f"<sequence_number>{escape(f.sequence_number)}</sequence_number>"
        parts.append(f"<event{'' if as_list else f' xmlns={chr(34)}{NS}{chr(34)}'}><id>{escape(f.key['ID'])}</id>"
                     f"{seq}</event>")
    body = "".join(parts)
    if as_list:
        body = f'<event_list xmlns="{NS}">{body}</event_list>'
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode("utf-8")


def escape(value: str) -> str:
    """Text for an XML element: markup escaped, CR/LF/TAB as character references, characters
    XML cannot carry dropped."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = value.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;")
    return _NOT_XML.sub("", value)

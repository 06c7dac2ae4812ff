"""Sync back to OMi: ``omi/change`` events delivered as ``event_change`` requests to OMi's gateway.

The built-in system subscriber (action ``omi``, lane ACTIONS) of topic ``omi/change`` turns each
event into ``POST <gateway>/opr-gateway/rest/9.10/synchronization/event_change/<OMi event id>``
with HTTP Basic ``[omi] user``:password (docs/omi.md). OMi's event id comes from the key's
``OMI_ID``, or from every OMi event stored behind the key's ``ID`` (:mod:`bridge.eventcore.omimap`); an
unknown one, or an OMi id that cannot be one path segment of the URL (``.``, ``..``, empty), is
:class:`Unsendable`: refused before anything is stored where the sender asks (:func:`targets`:
``omi close``, the JSON API), else the delivery fails at once with the reason. Nothing is guessed.

Outcomes: 2xx is done; a gateway that cannot be reached, times out or answers 5xx is an attempt
that failed and is retried with the Event Manager's backoff; 401/403/404 fail the attempt with
the gateway's answer in it and fail the delivery at once (no retry can mend them: after fixing
the password or the user, ``ombridge retry --subscriber ID`` sends it again). A close arms the
loop guard before it is sent (:func:`bridge.eventcore.omimap.arm`).

Settings, in ``conf/ombridge.conf``::

    [omi]
    external_id = ["custom_attribute:SourceEventID", "original_id", "id"]
    gateway     = "https://omi-gateway.example.com"
    user        = "ombridge-connector"
    ca_file     = "conf/tls/omi-ca.pem"

The password (the connected server's *incoming connection* password) lives in
``conf/omi-password``, owner-only, written by ``ombridge omi password``; it is never printed,
logged or put in an attempt.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .. import conf
from ..errors import UsageError
from ..eventcore import omimap
from ..home import Home
from ..model import OUTPUT_TAIL, Attempt
from ..store import Connection, Store

PASSWORD_FILE = os.path.join("conf", "omi-password")
SYNC_PATH = "/opr-gateway/rest/9.10/synchronization/"
NS = "http://www.hp.com/2009/software/opr/data_model"
DEFAULT_EXTERNAL_ID = ("original_id", "id")
_KEYS = {"external_id", "gateway", "user", "ca_file"}
_CANDIDATE = re.compile(r"(custom_attribute:[^\s:]{1,128}|[A-Za-z_][A-Za-z0-9_.-]{0,127})")


class OmiConfigError(UsageError):
    """``[omi]`` in ``conf/ombridge.conf`` is missing something or holds a bad value."""


class Unsendable(UsageError):
    """A change no retry can send: no OMi event is known behind its external id, or OMi's event
    id cannot be put into the gateway's URL safely."""


def path_segment(omi_id: str) -> str:
    """OMi's event id as the last segment of the ``event_change`` URL: percent-encoded whole (a
    ``/``, ``?``, ``#``, ``%`` or space stays part of the id). ``.`` and ``..`` are refused: they
    are dot segments, which clients and proxies resolve (``event_change/..`` is the
    synchronization base itself) whether encoded or not; an empty id would name no event."""
    if omi_id in ("", ".", ".."):
        shown = "an empty id" if not omi_id else f"the id {omi_id!r}"
        raise Unsendable(f"OMi's event id cannot be {shown}: it would address another URL of the gateway "
                         "than the event's; nothing was sent")
    return quote(omi_id, safe="")


def targets(conn: Any, key: Mapping[str, Any]) -> list[str]:
    """The OMi event ids a change of ``key`` goes to: its ``OMI_ID``, or else every OMi event
    stored behind its ``ID``. Raises :class:`Unsendable` when there is none, or one cannot be sent."""
    external = str(key.get("ID", ""))
    found = [str(key["OMI_ID"])] if key.get("OMI_ID") else omimap.omi_ids(conn, external)
    if not found:
        raise Unsendable(f"no OMi event is known behind the external id {external!r}: OMi never forwarded "
                         "an event with that id to ombridge; give OMi's own event id as OMI_ID in the key")
    for omi_id in found:
        path_segment(omi_id)
    return found


@dataclass(frozen=True)
class OmiConfig:
    """The ``[omi]`` settings of a home."""

    external_id: tuple[str, ...] = DEFAULT_EXTERNAL_ID
    gateway: str | None = None
    user: str | None = None
    ca_file: str | None = None

    def url(self, omi_id: str | None = None) -> str:
        """The synchronization base (the ping), or the ``event_change`` URL of ``omi_id``."""
        if not self.gateway:
            raise OmiConfigError(f"[omi] gateway is not set in {conf.CONF_FILE} (e.g. gateway = \"https://omi.example.com\")")
        base = self.gateway.rstrip("/") + SYNC_PATH
        return base if omi_id is None else base + "event_change/" + path_segment(omi_id)


def load_config(home: Home) -> OmiConfig:
    """The home's ``[omi]`` settings (defaults when there are none); :class:`OmiConfigError` for a bad one."""
    path = conf.path(home.root)
    try:
        section = conf.table(home.root, "omi")
    except conf.ConfError as exc:
        raise OmiConfigError(str(exc)) from None
    unknown = set(section) - _KEYS
    if unknown:
        raise OmiConfigError(f"{path}: unknown setting(s) {', '.join(sorted(f'omi.{k}' for k in unknown))} "
                             f"(known: {', '.join(f'omi.{k}' for k in sorted(_KEYS))})")
    candidates = section.get("external_id", list(DEFAULT_EXTERNAL_ID))
    if (not isinstance(candidates, list) or not candidates
            or not all(isinstance(c, str) and _CANDIDATE.fullmatch(c) for c in candidates)):
        raise OmiConfigError(f'{path}: omi.external_id is a list of candidates such as ["custom_attribute:SourceEventID", '
                             f'"original_id", "id"]')
    for name in ("gateway", "user", "ca_file"):
        if name in section and (not isinstance(section[name], str) or not section[name]):
            raise OmiConfigError(f"{path}: omi.{name} must be a non-empty string")
    gateway = section.get("gateway")
    if gateway is not None:
        _check_gateway(path, gateway)
    ca_file = section.get("ca_file")
    if ca_file is not None:
        ca_file = os.path.join(str(home.root), os.path.expanduser(ca_file))
    return OmiConfig(tuple(candidates), gateway, section.get("user"), ca_file)


def _check_gateway(path: object, gateway: str) -> None:
    """Refuse a gateway URL that is not ``http(s)://HOST[:PORT][/PATH]``; one holding credentials
    (``USER:PASSWORD@``) without repeating it, since it holds a secret."""
    if "@" in gateway:
        raise OmiConfigError(f"{path}: omi.gateway must not hold credentials (USER:PASSWORD@HOST): set omi.user, "
                             "and store the password with `ombridge omi password` (the value is not repeated "
                             "here, it holds a secret)")
    try:
        parts = urlsplit(gateway)
        good = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query and not parts.fragment
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        good = False
    if not good:
        raise OmiConfigError(f"{path}: omi.gateway must be https://HOST[:PORT], without query or fragment "
                             f"(got {gateway!r})")


def clear_text_warning(config: OmiConfig) -> str | None:
    """A warning when the gateway is plain HTTP: the connected server's password goes with every
    request, readable by anyone on the way. Accepted all the same (a test gateway, a tunnel)."""
    if config.gateway and urlsplit(config.gateway).scheme == "http":
        return (f"[omi] gateway {config.gateway} is plain HTTP: the connected server's password, sent with every "
                "request, crosses the network in clear; use https:// (with [omi] ca_file for a private CA)")
    return None


def setting_warnings(home: Home) -> list[str]:
    """What ``ombridge check`` says about the sync back's settings: a gateway in plain HTTP, or
    why ``[omi]`` cannot be used (the sync back would fail every change until it is mended)."""
    try:
        warning = clear_text_warning(load_config(home))
    except OmiConfigError as exc:
        return [str(exc)]
    return [warning] if warning else []


# -- the password ---------------------------------------------------------------------------------


def set_password(home: Home, password: str) -> None:
    """Store the connected server's incoming password, owner-only (written whole, then renamed)."""
    if not password or "\n" in password or "\r" in password:
        raise UsageError("the password must be one non-empty line")
    path = home.root / PASSWORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _credentials(home: Home, config: OmiConfig) -> str:
    """The ``Authorization`` header's value."""
    if not config.user:
        raise OmiConfigError(f"[omi] user is not set in {conf.CONF_FILE} (the connected server's name in OMi)")
    try:
        with open(home.root / PASSWORD_FILE, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except FileNotFoundError:
        raise OmiConfigError("no OMi password is stored: run `ombridge omi password`") from None
    token = base64.b64encode(f"{config.user}:{password}".encode()).decode("ascii")
    return "Basic " + token


# -- the body -------------------------------------------------------------------------------------

_SIMPLE = (("STATE", "state_change", "state"), ("SEVERITY", "severity_property_change", "severity"),
           ("TITLE", "string_property_change", "title"), ("PRIORITY", "string_property_change", "priority"))
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return _NOT_XML.sub("", text.replace("\r", "&#13;"))


def _value(v: object) -> str:
    return f'<current_value xsi:type="xs:string">{_x(v)}</current_value>'


def change_body(omi_id: str, key: Mapping[str, Any]) -> bytes:
    """The ``<event_change>`` of ``key``'s changes for OMi event ``omi_id`` (every value escaped)."""
    parts = []
    for field, element, prop in _SIMPLE:
        if key.get(field) not in (None, ""):
            parts.append(f"<{element}><property_name>{prop}</property_name>{_value(key[field])}</{element}>")
    if key.get("ANNOTATION"):
        parts.append("<annotation_property_change><property_name>annotation</property_name>"
                     f"{_value(key['ANNOTATION'])}<change_operation>insert</change_operation>"
                     "</annotation_property_change>")
    if key.get("ASSIGNED_GROUP"):
        parts.append("<group_property_change><property_name>assigned_group_name</property_name>"
                     f"<current_group_name>{_x(key['ASSIGNED_GROUP'])}</current_group_name></group_property_change>")
    if key.get("ASSIGNED_USER"):
        parts.append("<user_property_change><property_name>assigned_user</property_name>"
                     f"<current_user_name>{_x(key['ASSIGNED_USER'])}</current_user_name></user_property_change>")
    for field, value in key.items():
        if field.startswith("CA_") and len(field) > 3:
            parts.append("<custom_attribute_property_change><property_name>custom_attribute</property_name>"
                         f"<name>{_x(field[3:])}</name>{_value(value)}</custom_attribute_property_change>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<event_change xmlns="{NS}" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema">'
            f"<event_ref><target_id>{_x(omi_id)}</target_id></event_ref>"
            f"<changed_properties>{''.join(parts)}</changed_properties></event_change>").encode("utf-8")


# -- delivery -------------------------------------------------------------------------------------

class SyncBack:
    """The sync back of one home: the Event Manager's performer for ``omi`` actions (the daemon
    hands it over: ``others``). It keeps, for each action lane (a thread), a connection to the
    event core, reconnected by :meth:`bridge.store.Store.using` when the database restarted, and the
    ``[omi]`` settings with the password, read again only when their files changed."""

    def __init__(self, home: Home, store: Store) -> None:
        self.home = home
        self.store = store  # the process's one Store
        self._local = threading.local()  # each lane thread: its connection
        self._read: tuple[tuple[float, float], OmiConfig, str] | None = None  # (stamps, settings, credentials)

    def settings(self) -> tuple[OmiConfig, str]:
        """The ``[omi]`` settings and the ``Authorization`` value, as the files now hold them."""
        stamps = (_stamp(conf.path(self.home.root)), _stamp(self.home.root / PASSWORD_FILE))
        read = self._read
        if read is None or read[0] != stamps:
            config = load_config(self.home)
            read = self._read = (stamps, config, _credentials(self.home, config))
        return read[1], read[2]

    def deliver(self, event: Any, timeout: float) -> Attempt:
        """Deliver one ``omi/change`` event (an :class:`~bridge.eventcore.deliveries.EventContext`)
        to OMi's gateway."""
        from . import omihttp

        started = time.time()
        key = event.key
        closing = key.get("STATE") == "closed"
        try:
            config, auth = self.settings()
            config.url()
            # The loop guard is armed before sending: OMi may forward its echo of this close
            # before its gateway has answered us (omimap.arm).
            omi_ids, guard = self._use(lambda conn: _targets_and_guard(conn, key, closing))
        except UsageError as exc:  # (a setting can be mended and the delivery then goes; an unsendable id never)
            return Attempt(False, started, time.time(), error=str(exc), final=isinstance(exc, Unsendable))
        outputs = []
        for n, omi_id in enumerate(omi_ids):
            answer = omihttp.post(config, config.url(omi_id), change_body(omi_id, key), auth, timeout)
            outputs.append(f"{omi_id}: {answer.summary()}")
            if not answer.ok:
                if guard is not None:  # OMi refused this one (an answer) or may have closed it (none)
                    rest = omi_ids[n if answer.status is not None else n + 1:]
                    self._use(lambda conn: omimap.disarm(conn, guard, rest))
                return Attempt(False, started, time.time(), answer.status, "\n".join(outputs)[-OUTPUT_TAIL:],
                               answer.error, final=answer.status in (401, 403, 404))
        return Attempt(True, started, time.time(), 200, "\n".join(outputs)[-OUTPUT_TAIL:])

    def _use(self, work: Any) -> Any:
        self._local.conn, result = self.store.using(getattr(self._local, "conn", None), work)
        return result


def _targets_and_guard(conn: Connection, key: Mapping[str, Any], closing: bool) -> tuple[list[str], Any]:
    omi_ids = targets(conn, key)
    return omi_ids, omimap.arm(conn, str(key["ID"]), omi_ids) if closing else None


def _stamp(path: os.PathLike[str] | str) -> float:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1.0


def test_gateway(home: Home, timeout: float = 10.0) -> str:
    """``HEAD`` the gateway's synchronization base; one line saying what answered.
    Raises :class:`UsageError` when the gateway could not be reached or refused the credentials."""
    from . import omihttp

    config = load_config(home)
    url = config.url()
    answer = omihttp.head(config, url, _credentials(home, config), timeout)
    if not answer.ok:
        raise OmiGatewayError(f"{url}: {answer.error}")
    return f"{url}: {answer.summary()} (user {config.user})"


class OmiGatewayError(UsageError):
    """OMi's gateway could not be reached or refused the request."""

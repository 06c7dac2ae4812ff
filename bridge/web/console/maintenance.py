"""The console's maintenance screens: topics, subscribers, subscriber topics, event filters,
integrations — each form calls the ``bridge.eventcore.catalog`` function the matching CLI command calls, so
the checks and the error sentences are the CLI's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...doorbell import ring
from ...errors import BridgeError, UsageError
from ...eventcore import audit, builtins, catalog, ledger, pauses
from ...model import ActionKind, DeliveryStatus
from ...ombacksync import integrations
from ...store import Connection
from ...wording import pause_answer, paused_since
from .base import Console, Refusal, form, number, path_int

NO_BACKLOG = dict.fromkeys((DeliveryStatus.OPEN.value, DeliveryStatus.FAILED.value), 0)
ACTIONS = (ActionKind.COMMAND, ActionKind.PROGRAM, ActionKind.WEB)  # what an operator's subscriber can run


def _action(text: str) -> ActionKind:
    try:
        action = ActionKind(text)
    except ValueError:
        action = None
    if action not in ACTIONS:
        raise UsageError(f"choose what the subscriber runs: {', '.join(a.value for a in ACTIONS)}")
    return action


def _fields(text: str) -> list[str]:
    """Key fields typed as ``APPC, TASK`` or one a line."""
    return [f for f in text.replace(",", " ").split() if f]


def pause_question(s: dict[str, Any], what: str) -> dict[str, str]:
    """The confirmation page's words before subscriber ``s`` is paused or resumed."""
    sid, action = s["id"], s["action"]
    if what == "resume":
        return {"title": f"Resume subscriber {sid}?", "button": "Yes, resume it",
                "text": f"The {action} subscriber is {paused_since(s['paused_at'], s['paused_by']) or 'not paused'}. "
                        "Resumed, every node runs its waiting deliveries at once, oldest first."}
    what_waits = ("OMi's closes and `ombridge close` are still accepted and stored; no Close runs"
                  if action == ActionKind.BACKSYNC.value else "Its events are still stored; none of its deliveries runs")
    return {"title": f"Pause subscriber {sid}?", "button": "Yes, pause it",
            "text": f"{what_waits} on any node until it is resumed (a maintenance window of the system it calls). "
                    "Deliveries already running finish. Unlike Disable, nothing is refused and nothing is lost."}


class Unconfirmed(Exception):
    """A system subscriber's Disable that was not confirmed yet: its question is shown first."""


class Maintenance:
    """Topics, subscribers (with their topics and filters) and integrations, over one :class:`Console`."""

    def __init__(self, console: Console) -> None:
        self.c = console

    # -- topics ---------------------------------------------------------------------------------

    async def topics(self, request: Request) -> Response:
        """Every topic with its key fields; the form to add one."""
        return self.c.page(request, "topics.html", {"topics": await self.c.core(catalog.list_topics),
                                                    "system_topics": list(builtins.SEED_TOPICS)})

    async def topic_add(self, request: Request) -> Response:
        """``ombridge topic add NAME --key F ... --description D``."""
        f = form(request)

        def add(conn: Connection) -> str:
            catalog.add_topic(conn, f.get("name", "").strip(), _fields(f.get("keys", "")), f.get("description", ""))
            return f"topic {f.get('name', '').strip()} defined"

        return await self.c.act(request, "/ui/topics", add)

    async def topic_remove_confirm(self, request: Request) -> Response:
        """The question before a topic is removed."""
        name = request.query_params.get("name", "")
        return self.c.page(request, "confirm.html", {
            "title": f"Remove the topic {name}?", "action": "/ui/topics/remove", "fields": {"name": name},
            "text": f"The topic {name} and its key fields are removed; its stored events are kept. "
                    "It is refused while a subscriber is attached to it.",
            "button": "Yes, remove it", "cancel": "/ui/topics"})

    async def topic_remove(self, request: Request) -> Response:
        """``ombridge topic remove NAME`` (refused while subscribers use it), once confirmed."""
        name = form(request).get("name", "")
        if form(request).get("confirm") != "yes":
            return RedirectResponse(f"/ui/topics/remove?name={quote(name)}", status_code=303)

        def remove(conn: Connection) -> str:
            catalog.remove_topic(conn, name)
            return f"topic {name} removed"

        return await self.c.act(request, "/ui/topics", remove)

    # -- subscribers ----------------------------------------------------------------------------

    async def subscribers(self, request: Request) -> Response:
        """Every subscriber; the form to add one."""
        data = {"subscribers": await self.c.core(catalog.list_subscribers),
                "actions": [a.value for a in ACTIONS]}
        return self.c.page(request, "subscribers.html", data)

    async def subscriber_add(self, request: Request) -> Response:
        """``ombridge subscriber add --command|--program|--url ... --timeout --retries``."""
        f = form(request)

        def add(conn: Connection) -> str:
            options: dict[str, Any] = {"description": f.get("description", "")}
            for name, kind in (("timeout", float), ("retries", int)):
                value = number(f.get(name), name, kind)
                if value is not None:
                    options[name] = value
            sid = catalog.add_subscriber(conn, _action(f.get("action", "")), f.get("target", ""),
                                         allow_nested_shell=f.get("allow_nested_shell") == "on", **options)
            return f"subscriber {sid} added"

        return await self.c.act(request, "/ui/subscribers", add)

    async def subscriber(self, request: Request) -> Response:
        """One subscriber: its settings (editable), topics with their filters, its backlog."""
        sid = path_int(request, "subscriber_id")

        def read(conn: Connection) -> dict[str, Any]:
            return {"subscriber": catalog.show_subscriber(conn, sid),
                    "backlog": ledger.per_subscriber(conn).get(sid, NO_BACKLOG),
                    "topics": [t["name"] for t in catalog.list_topics(conn)],
                    "actions": [a.value for a in ACTIONS]}

        return await self.c.view(request, "subscriber.html", read, gone="/ui/subscribers")

    async def subscriber_edit(self, request: Request) -> Response:
        """``ombridge subscriber set`` (description, timeout, retries) and a new command/program/URL."""
        sid = path_int(request, "subscriber_id")
        f = form(request)

        def edit(conn: Connection) -> str:
            timeout = number(f.get("timeout"), "timeout", float)
            retries = number(f.get("retries"), "retries", int)
            if f.get("target") is not None and f.get("action"):
                catalog.edit_subscriber(conn, sid, _action(f["action"]), f["target"],
                                        allow_nested_shell=f.get("allow_nested_shell") == "on",
                                        timeout=timeout, retries=retries, description=f.get("description"))
            else:
                catalog.update_subscriber(conn, sid, timeout=timeout, retries=retries,
                                          description=f.get("description"))
            return f"subscriber {sid} updated"

        return await self.c.act(request, f"/ui/subscribers/{sid}", edit)

    async def subscriber_confirm(self, request: Request) -> Response:
        """The question before a subscriber is removed, paused or resumed, or before a system
        subscriber is disabled (a disabled backsync refuses every close: OMi is answered 503 until
        it is enabled)."""
        sid = path_int(request, "subscriber_id")
        what = request.path_params["what"]
        if what not in ("remove", "disable", "pause", "resume"):
            raise Refusal(404, f"no action {what!r}")

        def read(conn: Connection) -> dict[str, Any]:
            s = catalog.show_subscriber(conn, sid)
            page = {"action": f"/ui/subscribers/{sid}/{what}", "fields": {}, "cancel": f"/ui/subscribers/{sid}"}
            if what in ("pause", "resume"):
                return {**page, **pause_question(s, what)}
            if what == "remove":
                return {**page, "title": f"Remove subscriber {sid}?", "button": "Yes, remove it",
                        "text": f"Subscriber {sid} ({s['action']} {s['target']}) is removed with its deliveries "
                                "and their attempts. It is refused while it has open deliveries: purge them first."}
            return {**page, "title": f"Disable system subscriber {sid}?", "button": "Yes, disable it",
                    "text": f"While the {s['action']} subscriber is disabled, the events it takes are refused, not "
                            "stored: OMi's closes are answered 503 (OMi keeps them and sends them again) and "
                            "`ombridge close` fails. Open deliveries stay open. To hold the work instead, "
                            "pause it: its events are then stored and wait."}

        return await self.c.view(request, "confirm.html", read, gone="/ui/subscribers")

    async def subscriber_switch(self, request: Request) -> Response:
        """Enable, disable or remove (once confirmed) a subscriber; a system subscriber is disabled
        only once confirmed too."""
        sid = path_int(request, "subscriber_id")
        what = request.path_params["what"]
        if what not in ("enable", "disable", "remove", "pause", "resume"):
            raise Refusal(404, f"no action {what!r}")
        confirmed = form(request).get("confirm") == "yes"
        if what in ("remove", "pause", "resume") and not confirmed:
            return RedirectResponse(f"/ui/subscribers/{sid}/{what}", status_code=303)
        user = request.scope["console_user"][0]

        def switch(conn: Connection) -> str:
            if what in ("pause", "resume"):
                return self._pause(conn, sid, what, user)
            if what == "remove":
                catalog.remove_subscriber(conn, sid)
                return f"subscriber {sid} removed"
            if what == "disable" and not confirmed and catalog.get_subscriber(conn, sid).system:
                raise Unconfirmed
            catalog.set_disabled(conn, sid, what == "disable")
            return f"subscriber {sid} {what}d"

        try:
            return await self.c.act(request, "/ui/subscribers" if what == "remove" else f"/ui/subscribers/{sid}",
                                    switch)
        except Unconfirmed:
            return RedirectResponse(f"/ui/subscribers/{sid}/disable", status_code=303)

    def _pause(self, conn: Connection, sid: int, what: str, user: str) -> str:
        """``ombridge subscriber pause|resume ID`` for the console user ``user``; an unchanged one
        is refused with its sentence (nothing to write to the audit trail)."""
        change = pauses.pause(conn, sid, audit.console_user(user)) if what == "pause" else pauses.resume(conn, sid)
        if not change.changed:
            raise UsageError(pause_answer(change))
        if what == "resume":
            ring(self.c.home.root)  # (other nodes: woken by the resume's NOTIFY)
        return pause_answer(change)

    # -- subscriber topics and filters ----------------------------------------------------------

    async def topic_attach(self, request: Request) -> Response:
        """``ombridge subscriber topic add ID PATTERN [--sync]``."""
        sid = path_int(request, "subscriber_id")
        f = form(request)
        pattern, sync = f.get("pattern", "").strip(), f.get("synchronized") == "on"

        def attach(conn: Connection) -> str:
            catalog.attach_topic(conn, sid, pattern, sync, f.get("description", ""))
            return f"subscriber {sid} attached to {pattern}{' (synchronized)' if sync else ''}"

        return await self.c.act(request, f"/ui/subscribers/{sid}", attach)

    async def topic_detach(self, request: Request) -> Response:
        """``ombridge subscriber topic remove ID PATTERN``."""
        sid = path_int(request, "subscriber_id")
        pattern = form(request).get("pattern", "")

        def detach(conn: Connection) -> str:
            catalog.detach_topic(conn, sid, pattern)
            return f"subscriber {sid} detached from {pattern}"

        return await self.c.act(request, f"/ui/subscribers/{sid}", detach)

    async def filter_add(self, request: Request) -> Response:
        """``ombridge subscriber filter add ID PATTERN VARIABLE REGEX`` (checked as the CLI checks it)."""
        sid = path_int(request, "subscriber_id")
        f = form(request)
        pattern, variable, regex = f.get("pattern", ""), f.get("variable", "").strip(), f.get("regex", "")

        def add(conn: Connection) -> str:
            catalog.add_filter(conn, sid, pattern, variable, regex, f.get("description", ""))
            return f"subscriber {sid} on {pattern}: filter {variable} = {regex}"

        return await self.c.act(request, f"/ui/subscribers/{sid}", add)

    async def filter_remove(self, request: Request) -> Response:
        """``ombridge subscriber filter remove ID PATTERN VARIABLE``."""
        sid = path_int(request, "subscriber_id")
        f = form(request)

        def remove(conn: Connection) -> str:
            catalog.remove_filter(conn, sid, f.get("pattern", ""), f.get("variable", ""))
            return f"subscriber {sid} on {f.get('pattern', '')}: filter {f.get('variable', '')} removed"

        return await self.c.act(request, f"/ui/subscribers/{sid}", remove)

    # -- integrations ---------------------------------------------------------------------------

    async def integrations(self, request: Request) -> Response:
        """``ombridge integration list``: the integrations merged into the home's OMBackSync.pl."""
        try:
            found = await run_in_threadpool(integrations.list_integrations, self.c.home)
        except BridgeError as exc:
            raise Refusal(500, str(exc)) from exc
        data = {"integrations": [{"name": i.name, "info": i.info, "lines": i.code.count("\n") + 1} for i in found],
                "script": str(self.c.home.script)}
        return self.c.page(request, "integrations.html", data)

"""Commands of the event core: topics, subscribers, subscriber topics, filters, send, listings."""

from __future__ import annotations

import json
import sys
from typing import Any

import rich_click as click

from ..client.control import ring
from ..errors import UsageError
from ..eventcore import catalog, deliveries, events, ledger
from ..model import ActionKind, DeliveryStatus
from ..wording import attempt_rounds, attempt_status, history_header, paused_since
from .base import (
    LIMIT,
    RETRIES,
    ROW_ID,
    SECONDS,
    audited,
    core,
    done,
    home_of,
    json_option,
    listing,
    main,
    print_json,
    read_secret,
    when,
)
from .report import print_send

OPEN, FAILED = DeliveryStatus.OPEN.value, DeliveryStatus.FAILED.value


# -- topics ---------------------------------------------------------------------------------------


@main.group()
def topic() -> None:
    """Define the topics events are sent to (`subject{/subject}/action`) and their key fields."""


@topic.command("add")
@click.argument("name")
@click.argument("more_keys", nargs=-1, metavar="[FIELD]...")
@click.option("--key", "keys", multiple=True, metavar="FIELD",
              help="A key field; becomes &FIELD. More may follow it (--key A B) or repeat it (--key A --key B).")
@click.option("--description", default="", help="What the topic means.")
@click.pass_context
def topic_add(ctx: click.Context, name: str, more_keys: tuple[str, ...], keys: tuple[str, ...],
              description: str) -> None:
    """Define a topic and the fields its key must carry (`--key FIELD...`).

    Example: `ombridge topic add task/change --key APPC TASK --description "a task was changed"`
    (the same as `--key APPC --key TASK`)
    """
    if more_keys and not keys:  # a bare word after NAME is a typo more likely than a key field
        raise UsageError(f"unexpected {more_keys[0]!r}: key fields follow --key (--key {' '.join(more_keys)})")
    catalog.add_topic(core(ctx), name, [*keys, *more_keys], description)
    done(ctx, f"topic {name} defined")


@topic.command("list")
@json_option
@click.pass_context
def topic_list(ctx: click.Context, as_json: bool) -> None:
    """List the topics. Example: `ombridge topic list --json`"""
    rows = catalog.list_topics(core(ctx))
    listing(as_json, rows, "Topics", ["topic", "key fields", "subscribers", "description"],
            [[r["name"], ", ".join(r["key_fields"]), r["subscribers"], r["description"]] for r in rows])


@topic.command("show")
@click.argument("name")
@json_option
@click.pass_context
def topic_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one topic. Example: `ombridge topic show task/change`"""
    t = catalog.get_topic(core(ctx), name)
    if as_json:
        print_json(t)
        return
    click.echo(f"topic:       {t['name']}\nkey fields:  {', '.join(t['key_fields']) or '(none)'}\n"
               f"description: {t['description']}\ndefined:     {when(t['created_at'])}")


@topic.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also detach the subscribers attached to it by name.")
@click.pass_context
def topic_remove(ctx: click.Context, name: str, force: bool) -> None:
    """Remove a topic (refused while subscribers use it). Stored events keep their topic.

    Example: `ombridge topic remove task/change`
    """
    catalog.remove_topic(core(ctx), name, force)
    done(ctx, f"topic {name} removed")


# -- subscribers ----------------------------------------------------------------------------------


@main.group()
def subscriber() -> None:
    """Subscribers: actions run for the events of their topics."""


@subscriber.command("add")
@click.option("--command", "command", metavar="CMD", help="A command string run by /bin/sh -c; &VARs are substituted safely.")
@click.option("--program", metavar="PATH", help="An event program, run without a shell as: PATH TOPIC KEY_JSON.")
@click.option("--url", metavar="URL", help="A web call: the event is POSTed as JSON.")
@click.option("--description", default="", help="What the subscriber does.")
@click.option("--timeout", type=SECONDS, default=catalog.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds an attempt may take; then its process group is killed.")
@click.option("--retries", type=RETRIES, default=catalog.DEFAULT_RETRIES, show_default=True,
              help="Retries after a failed attempt, with backoff, before the delivery is failed.")
@click.option("--allow-nested-shell", is_flag=True,
              help="Accept &VARs after sh -c / ssh / su -c / eval, where a value is parsed as shell syntax.")
@click.option("--secret-header", "secret_headers", multiple=True, metavar="NAME",
              help="A header the web call sends (e.g. Authorization); its value is asked for, or read from "
                   "stdin, one line per header, and is never shown by a listing.")
@click.pass_context
def subscriber_add(ctx: click.Context, command: str | None, program: str | None, url: str | None,
                   description: str, timeout: float, retries: int, allow_nested_shell: bool,
                   secret_headers: tuple[str, ...]) -> None:
    """Create a subscriber; prints its id alone, so scripts can capture it.

    Example: `ombridge subscriber add --command "logger 'Task &TASK was changed in application &APPC.'"`
    """
    given = [(ActionKind.COMMAND, command), (ActionKind.PROGRAM, program), (ActionKind.WEB, url)]
    chosen = [(a, t) for a, t in given if t is not None]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --command, --program or --url")
    action, target = chosen[0]
    secrets = {name: read_secret(f"Value of header {name}") for name in secret_headers}
    sid = catalog.add_subscriber(core(ctx), action, target, description=description, timeout=timeout,
                                 retries=retries, allow_nested_shell=allow_nested_shell, secret_headers=secrets)
    audited(ctx, f"subscriber {sid} added ({action.value})")
    click.echo(sid)


@subscriber.command("set")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.option("--command", "command", metavar="CMD", help="A new command string (checked as `subscriber add` checks it).")
@click.option("--program", metavar="PATH", help="A new event program.")
@click.option("--url", metavar="URL", help="A new URL for a web call.")
@click.option("--allow-nested-shell", is_flag=True, help="As for `subscriber add`: accept &VARs after sh -c / ssh / eval.")
@click.option("--timeout", type=SECONDS, default=None, help="Seconds an attempt may take (for backsync: one Close).")
@click.option("--retries", type=RETRIES, default=None, help="Retries after a failed attempt before it is failed.")
@click.option("--description", default=None)
@click.option("--secret-header", "secret_headers", multiple=True, metavar="NAME",
              help="Set a header the web call sends; its value is asked for, or read from stdin, one line per header.")
@click.option("--remove-secret-header", "drop_headers", multiple=True, metavar="NAME", help="Stop sending this header.")
@click.pass_context
def subscriber_set(ctx: click.Context, subscriber_id: int, command: str | None, program: str | None,
                   url: str | None, allow_nested_shell: bool, timeout: float | None, retries: int | None,
                   description: str | None, secret_headers: tuple[str, ...], drop_headers: tuple[str, ...]) -> None:
    """Change a subscriber: what it runs, its timeout, retries, description or secret headers;
    system subscribers' settings too (their action is fixed). All or nothing.

    A new backsync timeout applies when ombacksync next starts.
    Example: `ombridge subscriber set 1 --retries 20` or `ombridge subscriber set 4 --url https://itsm/api/close`
    """
    given = [(a, t) for a, t in ((ActionKind.COMMAND, command), (ActionKind.PROGRAM, program), (ActionKind.WEB, url))
             if t is not None]
    if len(given) > 1:
        raise UsageError("give at most one of --command, --program or --url")
    action, target = given[0] if given else (None, None)
    secrets = {name: read_secret(f"Value of header {name}") for name in secret_headers}
    catalog.edit_subscriber(core(ctx), subscriber_id, action, target, allow_nested_shell=allow_nested_shell,
                            timeout=timeout, retries=retries, description=description, secret_headers=secrets,
                            drop_headers=drop_headers)
    what = [name for name, value in (("command", command), ("program", program), ("url", url), ("timeout", timeout),
                                     ("retries", retries), ("description", description)) if value is not None]
    what += [f"secret header {name}" for name in secret_headers] + [f"no secret header {n}" for n in drop_headers]
    audited(ctx, f"subscriber {subscriber_id} updated" + (f" ({', '.join(what)})" if what else ""))
    click.echo(f"subscriber {subscriber_id} updated")


def _yes(flag: object) -> str:
    return "yes" if flag else "no"


@subscriber.command("list")
@json_option
@click.pass_context
def subscriber_list(ctx: click.Context, as_json: bool) -> None:
    """List the subscribers. Example: `ombridge subscriber list`"""
    rows = catalog.list_subscribers(core(ctx))
    listing(as_json, rows, "Subscribers",
            ["id", "action", "target", "topics", "sys", "disabled", "paused", OPEN, FAILED, "description"],
            [[r["id"], r["action"], r["target"], r["topics"], _yes(r["system"]), _yes(r["disabled"]),
              f"since {when(r['paused_at'])}" if r["paused_at"] else "no", r[OPEN], r[FAILED], r["description"]]
             for r in rows])


@subscriber.command("show")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@json_option
@click.pass_context
def subscriber_show(ctx: click.Context, subscriber_id: int, as_json: bool) -> None:
    """Show a subscriber with its topics and filters. Example: `ombridge subscriber show 2`"""
    s = catalog.show_subscriber(core(ctx), subscriber_id)
    if as_json:
        print_json(s)
        return
    click.echo(f"subscriber {s['id']}: {s['description']}\n  {s['action']}: {s['target']}\n"
               f"  system {_yes(s['system'])}, disabled {_yes(s['disabled'])}, timeout {s['timeout']:g}s, "
               f"retries {s['retries']}")
    if s["paused_at"] is not None:
        click.echo(f"  {paused_since(s['paused_at'], s['paused_by'])} (ombridge subscriber resume {s['id']})")
    for t in s["topics"]:
        click.echo(f"  topic {t['pattern']}{' (synchronized)' if t['synchronized'] else ''}")
        for f in t["filters"]:
            click.echo(f"    filter &{f['variable']} = {f['regex']}")


def _simple(name: str, doc: str, fn: Any, message: str, wake: bool = False) -> None:
    @subscriber.command(name, help=doc)
    @click.argument("subscriber_id", metavar="ID", type=ROW_ID)
    @click.pass_context
    def command(ctx: click.Context, subscriber_id: int) -> None:
        result = fn(core(ctx), subscriber_id)
        if wake:
            ring(home_of(ctx).root)  # work may be due now: the Event Manager looks at once
        done(ctx, message.format(id=subscriber_id, n=result))


_simple("enable", "Enable a subscriber. Example: `ombridge subscriber enable 2`",
        lambda c, i: catalog.set_disabled(c, i, False), "subscriber {id} enabled", wake=True)
_simple("disable", "Disable a subscriber: new events no longer match it. Example: `ombridge subscriber disable 2`",
        lambda c, i: catalog.set_disabled(c, i, True), "subscriber {id} disabled")
_simple("purge", "Drop a subscriber's open deliveries (they become `purged`). Example: `ombridge subscriber purge 2`",
        catalog.purge_subscriber, "subscriber {id}: {n} open deliveries purged")


@subscriber.command("remove")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.option("--force", is_flag=True, help="Remove even with open deliveries (they are dropped).")
@click.pass_context
def subscriber_remove(ctx: click.Context, subscriber_id: int, force: bool) -> None:
    """Remove a subscriber with its topics, filters and delivery history.

    Refused for system subscribers and while deliveries are open. Example: `ombridge subscriber remove 2`
    """
    catalog.remove_subscriber(core(ctx), subscriber_id, force)
    done(ctx, f"subscriber {subscriber_id} removed")


@subscriber.group("topic")
def subscriber_topic() -> None:
    """Attach subscribers to qualified (`task/add`) or generic (`task/*`, `*`) topics."""


@subscriber_topic.command("add")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.argument("pattern")
@click.option("--sync", is_flag=True, help="Synchronized: called before `send` returns, not by the Event Manager.")
@click.option("--description", default="")
@click.pass_context
def subscriber_topic_add(ctx: click.Context, subscriber_id: int, pattern: str, sync: bool, description: str) -> None:
    """Attach a subscriber to a topic pattern. `task/*` matches `task/add` and `task/x/y`; `*` matches all.

    Example: `ombridge subscriber topic add 2 task/change`
    """
    catalog.attach_topic(core(ctx), subscriber_id, pattern, sync, description)
    done(ctx, f"subscriber {subscriber_id} attached to {pattern}{' (synchronized)' if sync else ''}")


@subscriber_topic.command("remove")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.argument("pattern")
@click.pass_context
def subscriber_topic_remove(ctx: click.Context, subscriber_id: int, pattern: str) -> None:
    """Detach a subscriber from a topic pattern. Example: `ombridge subscriber topic remove 2 task/change`"""
    catalog.detach_topic(core(ctx), subscriber_id, pattern)
    done(ctx, f"subscriber {subscriber_id} detached from {pattern}")


@subscriber.group("filter")
def subscriber_filter() -> None:
    """Event filters: a regular expression on a variable; all filters of a subscriber topic must match."""


@subscriber_filter.command("add")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.argument("pattern")
@click.argument("variable")
@click.argument("regex")
@click.option("--description", default="")
@click.pass_context
def subscriber_filter_add(ctx: click.Context, subscriber_id: int, pattern: str, variable: str, regex: str,
                          description: str) -> None:
    """Fire only when REGEX matches the whole value of VARIABLE (`KE.*` = starts with KE).

    Example: `ombridge subscriber filter add 2 task/change '&APPC' 'KE.*'`
    """
    catalog.add_filter(core(ctx), subscriber_id, pattern, variable, regex, description)
    done(ctx, f"subscriber {subscriber_id} on {pattern}: filter {variable} = {regex}")


@subscriber_filter.command("remove")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.argument("pattern")
@click.argument("variable")
@click.pass_context
def subscriber_filter_remove(ctx: click.Context, subscriber_id: int, pattern: str, variable: str) -> None:
    """Remove a filter. Example: `ombridge subscriber filter remove 2 task/change '&APPC'`"""
    catalog.remove_filter(core(ctx), subscriber_id, pattern, variable)
    done(ctx, f"subscriber {subscriber_id} on {pattern}: filter {variable} removed")


# -- sending and reading --------------------------------------------------------------------------


@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.argument("key", metavar="KEY_JSON")
@click.option("--force", is_flag=True, help="Store the event even when no subscriber listens.")
@click.pass_context
def send(ctx: click.Context, topic_name: str, key: str, force: bool) -> None:
    """Send an event; prints its id alone, or says on stderr that nobody listens (exit 3: not stored).

    Example: `ombridge send task/change '{"APPC": "KE1", "TASK": "T0123"}'`
    """
    from ..delivery.sending import send as send_event

    root = home_of(ctx).root
    code = print_send(send_event(core(ctx), topic_name, key, force, cwd=str(root), on_stored=lambda: ring(root)))
    if code:
        sys.exit(code)


@main.group()
def key() -> None:
    """The key-retrieval API, for shell event programs."""


@key.command("get")
@click.argument("key_json", metavar="KEY_JSON")
@click.argument("name")
def key_get(key_json: str, name: str) -> None:
    """Print one field of a key. Example: `APPC=$(ombridge key get "$2" APPC)`"""
    click.echo(events.key_field(key_json, name))


@main.group("events")
def events_group() -> None:
    """Stored events."""


@events_group.command("list")
@click.option("--topic", "topic_name", default=None, help="Only this topic.")
@click.option("--limit", type=LIMIT, default=50, show_default=True)
@json_option
@click.pass_context
def events_list(ctx: click.Context, topic_name: str | None, limit: int, as_json: bool) -> None:
    """List events, newest first. Example: `ombridge events list --topic task/change`"""
    rows = events.list_events(core(ctx), topic_name, limit)
    listing(as_json, [{**r, "key": json.loads(r["key"]), "context": json.loads(r["context"]) if r["context"] else None}
                      for r in rows], "Events",
            ["id", "topic", "key", "deliveries", OPEN, "forced", "parent", "depth", "created"],
            [[r["id"], r["topic"], r["key"], r["deliveries"], r[OPEN], r["forced"], r["parent_id"], r["depth"],
              when(r["created_at"])] for r in rows])


@main.group("deliveries")
def deliveries_group() -> None:
    """Subscriber events: one per subscriber per event, with status and attempts."""


@deliveries_group.command("list")
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]), default=None)
@click.option("--subscriber", "subscriber_id", type=ROW_ID, default=None)
@click.option("--limit", type=LIMIT, default=50, show_default=True)
@json_option
@click.pass_context
def deliveries_list(ctx: click.Context, status: str | None, subscriber_id: int | None, limit: int,
                    as_json: bool) -> None:
    """List deliveries, newest first. Example: `ombridge deliveries list --status failed`"""
    rows = ledger.list_deliveries(core(ctx), status, subscriber_id, limit)
    listing(as_json, [{**r, "key": json.loads(r["key"])} for r in rows], "Deliveries",
            ["id", "event", "topic", "key", "subscriber", "status", "attempts", "next attempt", "last error"],
            [[r["id"], r["event_id"], r["topic"], r["key"], f"{r['subscriber_id']} {r['subscriber']}".strip(),
              r["status"], r["attempts"], when(r["next_attempt_at"]) if r["status"] == DeliveryStatus.OPEN else "",
              r["last_error"]] for r in rows])


@deliveries_group.command("show")
@click.argument("delivery_id", metavar="ID", type=ROW_ID)
@json_option
@click.pass_context
def deliveries_show(ctx: click.Context, delivery_id: int, as_json: bool) -> None:
    """Show one delivery with every attempt: start, end, exit status, output tail, error.

    Example: `ombridge deliveries show 42`
    """
    d = ledger.show(core(ctx), delivery_id)
    if as_json:
        print_json(d)
        return
    click.echo(f"delivery {d['id']}: event {d['event_id']} {d['topic']} {json.dumps(d['key'], ensure_ascii=False)}\n"
               f"  subscriber {d['subscriber_id']} ({d['action']}) {d['subscriber']}".rstrip() + "\n"
               f"  {history_header(d)}"
               + (f", next {when(d['next_attempt_at'])}" if d["status"] == DeliveryStatus.OPEN else ""))
    rounds, shown = attempt_rounds(d["attempt_log"]), 0
    for a in d["attempt_log"]:
        if rounds > 1 and a["round"] != shown:
            shown = a["round"]
            click.echo(f"  round {a['round']}" + (" (retried)" if a["round"] > 1 else ""))
        outcome = "ok" if a["ok"] else f"failed: {a['error']}"
        status = "" if a["exit_status"] is None else f", {attempt_status(d['action'], a['exit_status'])}"
        click.echo(f"  attempt {a['n']}: {when(a['started_at'])} -> {when(a['ended_at'])} "
                   f"({a['ended_at'] - a['started_at']:.3f}s){status}, {outcome}")
        if a["output"]:
            click.echo("    output: " + a["output"].rstrip("\n").replace("\n", "\n            "))


@main.command()
@click.option("--subscriber", "subscriber_id", type=ROW_ID, default=None, help="Only this subscriber's.")
@click.option("--event", "event_id", type=ROW_ID, default=None, help="Only this event's.")
@click.option("--delivery", "delivery_ids", type=ROW_ID, multiple=True, help="Only this delivery (repeatable).")
@click.pass_context
def retry(ctx: click.Context, subscriber_id: int | None, event_id: int | None, delivery_ids: tuple[int, ...]) -> None:
    """Put failed deliveries back to open, due now, for a new round of attempts; the Event
    Manager runs them at once.

    Example: `ombridge retry --subscriber 2`, `ombridge retry --delivery 7 --delivery 9`
    """
    n = deliveries.retry_failed(core(ctx), subscriber_id=subscriber_id, event_id=event_id,
                                delivery_ids=delivery_ids or None)
    if n:
        ring(home_of(ctx).root)
    scope = [f"{what} {value}" for what, value in (("subscriber", subscriber_id), ("event", event_id)) if value]
    scope += [f"deliveries {', '.join(map(str, delivery_ids))}"] if delivery_ids else []
    audited(ctx, f"{n} failed deliveries reopened" + (f" (of {', '.join(scope)})" if scope else ""))
    click.echo(f"{n} failed deliveries reopened")


@deliveries_group.command("purge")
@click.argument("delivery_ids", metavar="ID...", type=ROW_ID, nargs=-1, required=True)
@click.pass_context
def deliveries_purge(ctx: click.Context, delivery_ids: tuple[int, ...]) -> None:
    """Drop chosen open or failed deliveries (they become `purged`, never delivered).

    Example: `ombridge deliveries purge 7 9`
    """
    n = deliveries.purge_chosen(core(ctx), delivery_ids)
    audited(ctx, f"{n} deliveries purged (of {', '.join(map(str, delivery_ids))})")
    click.echo(f"{n} deliveries purged")

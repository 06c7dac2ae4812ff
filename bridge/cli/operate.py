"""Operator commands: integrations, context variables, nodes, pruning, metrics."""

from __future__ import annotations

from pathlib import Path

import rich_click as click

from .. import store
from ..client import control
from ..errors import BridgeError, NotRunning, UsageError
from ..eventcore.nodes import short_checksum
from ..ombacksync import integrations
from .base import ROW_ID, audited, core, done, home_of, listing, main, store_of


def _tell_supervisor(ctx: click.Context) -> None:
    """Restart a running ombacksync so that it loads the changed script."""
    try:
        result = control.request(home_of(ctx).root, "restart", timeout=300, what="ombacksync")
    except NotRunning:
        click.echo("the supervisor is not running: ombacksync loads the script when it starts")
        return
    except BridgeError as exc:
        click.echo(f"ombridge: warning: the script was changed, but restarting ombacksync failed: {exc}", err=True)
        raise SystemExit(1) from exc
    click.echo(f"ombacksync restarted with the new script (pid {result['ombacksync']['pid']})")


@main.group()
def integration() -> None:
    """Integrations merged into the one `OMBackSync.pl`, added and removed by name."""


@integration.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def integration_add(ctx: click.Context, name: str, file: Path) -> None:
    """Merge FILE, a standalone `OMBackSync.pl`, into the home's script as integration NAME.

    Adding a name again replaces it. Refused, with perl's message and the script untouched, when
    the result would not compile. Example: `ombridge integration add vendor-a /opt/vendor-a/OMBackSync.pl`
    """
    replaced = integrations.add(home_of(ctx), name, file)
    done(ctx, f"integration {name} {'replaced' if replaced else 'added'}")
    _tell_supervisor(ctx)


@integration.command("remove")
@click.argument("name")
@click.pass_context
def integration_remove(ctx: click.Context, name: str) -> None:
    """Take integration NAME out of the home's script. Example: `ombridge integration remove vendor-a`"""
    integrations.remove(home_of(ctx), name)
    done(ctx, f"integration {name} removed")
    _tell_supervisor(ctx)


@integration.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def integration_list(ctx: click.Context, as_json: bool) -> None:
    """List the integrations merged into the home's script. Example: `ombridge integration list`"""
    found = integrations.list_integrations(home_of(ctx))
    listing(as_json, [{"name": i.name, "package": integrations.package_of(i.name), "info": i.info} for i in found],
            "Integrations", ["name", "package", "merged"],
            [[i.name, integrations.package_of(i.name), i.info] for i in found])


@main.group()
def context() -> None:
    """Context variables: columns of a table row as extra `&VAR`s of matching events."""


def _pair(text: str) -> tuple[str, str]:
    field, sep, column = text.partition("=")
    if not sep or not field or not column:
        raise UsageError(f"bad --match {text!r}: use KEYFIELD=COLUMN")
    return field, column


@context.command("add")
@click.argument("pattern")
@click.argument("table_name", metavar="TABLE")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="The SQLite file holding TABLE (default: the event core's own file).")
@click.option("--match", "pairs", multiple=True, required=True, metavar="KEYFIELD=COLUMN",
              help="The row is the one whose COLUMN equals the key's KEYFIELD (repeat for more).")
@click.pass_context
def context_add(ctx: click.Context, pattern: str, table_name: str, db_path: str | None, pairs: tuple[str, ...]) -> None:
    """For events of PATTERN, every other column of the matching TABLE row becomes a `&COLUMN`
    variable, usable in commands and event filters. Prints the context's id.

    Example: `ombridge context add 'task/*' applications --db apps.db --match APPC=APAPPL`
    """
    from ..eventcore.contexts import add_context

    context_id = add_context(core(ctx), pattern, table_name, dict(_pair(p) for p in pairs), db_path)
    audited(ctx, f"context {context_id} added ({pattern}: {table_name})")
    click.echo(context_id)


@context.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def context_list(ctx: click.Context, as_json: bool) -> None:
    """List the contexts. Example: `ombridge context list`"""
    from ..eventcore.contexts import list_contexts

    rows = list_contexts(core(ctx))
    listing(as_json, rows, "Contexts", ["id", "pattern", "table", "file", "match"],
            [[r["id"], r["pattern"], r["table_name"], r["db_path"] or "(event core)",
              ", ".join(f"{k}={v}" for k, v in r["matches"].items())] for r in rows])


@context.command("remove")
@click.argument("context_id", metavar="ID", type=ROW_ID)
@click.pass_context
def context_remove(ctx: click.Context, context_id: int) -> None:
    """Forget a context (stored events keep their variables). Example: `ombridge context remove 1`"""
    from ..eventcore.contexts import remove_context

    remove_context(core(ctx), context_id)
    done(ctx, f"context {context_id} removed")


@main.group()
def nodes() -> None:
    """The nodes sharing this home's event core (docs/multinode.md): list them, forget one gone for good."""


@nodes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def nodes_list(ctx: click.Context, as_json: bool) -> None:
    """List every node: state, where it runs, last heartbeat, claims held. Example: `ombridge nodes list`"""
    from ..eventcore.nodes import listing as node_listing

    rows = node_listing(core(ctx))
    listing(as_json, rows, "Nodes", ["name", "state", "host", "home", "pid", "seen", "leases", "clock", "script"],
            [[r["name"], r["state"], r["host"], r["home"], r["pid"], f"{r['seen_ago']:.0f}s ago", r["leases"],
              "" if r["clock_offset"] is None else f"{r['clock_offset']:+.1f}s", short_checksum(r["script_checksum"])]
             for r in rows])


@nodes.command("forget")
@click.argument("name")
@click.pass_context
def nodes_forget(ctx: click.Context, name: str) -> None:
    """Remove a dead or stopped node for good, making the claims it still holds due again on the
    others (refused while it runs). Example: `ombridge nodes forget connector-b`"""
    from ..eventcore.nodes import forget

    released = forget(core(ctx), name)
    done(ctx, f"node {name} forgotten; {released} of its claims are due again")


@main.command()
@click.option("--older-than", "age", metavar="AGE", help="e.g. 7d, 12h, 30m.")
@click.option("--all", "everything", is_flag=True, help="Every done delivery and finished event, whatever its age.")
@click.pass_context
def prune(ctx: click.Context, age: str | None, everything: bool) -> None:
    """Delete done deliveries, their attempts and finished events older than AGE (or all of them).

    Open and failed deliveries are never pruned. Example: `ombridge prune --older-than 7d`
    """
    from ..eventcore.retention import parse_age
    from ..eventcore.retention import prune as prune_store

    if everything == (age is not None):
        raise UsageError("give either --older-than AGE or --all")
    older_than = 0.0 if everything else parse_age(age or "")
    if not everything and older_than <= 0:
        raise UsageError("--older-than 0 would prune everything: say --all for that")
    counts = prune_store(core(ctx), older_than)
    done(ctx, f"pruned {counts['deliveries']} deliveries, {counts['attempts']} attempts, {counts['events']} events")


@main.command()
@click.option("--textfile", type=click.Path(dir_okay=False), default=None,
              help="Write to this file atomically (node_exporter's textfile collector) instead of stdout.")
@click.pass_context
def metrics(ctx: click.Context, textfile: str | None) -> None:
    """Print metrics in Prometheus text format. Example: `ombridge metrics --textfile /var/lib/node_exporter/ombridge.prom`"""
    from ..eventcore.metrics import render, write_textfile

    try:
        status = control.request(home_of(ctx).root, "status", timeout=10)
    except NotRunning:
        status = None
    text = render(core(ctx), status)
    if textfile:
        write_textfile(textfile, text)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("target", metavar="FILE", type=click.Path(dir_okay=False))
@click.pass_context
def backup(ctx: click.Context, target: str) -> None:
    """Copy the event core to FILE with SQLite's online backup, while ombridge runs (owner-only;
    an existing FILE is never overwritten). Example: `ombridge backup /var/backups/ombridge.db`
    """
    store.backup(store_of(ctx).connect(), target)
    click.echo(f"event core copied to {target}")


@main.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=True))
def init(directory: str) -> None:
    """Create a new home in DIR (new or empty) with the example `OMBackSync.pl`, owner-only.

    Then replace the script with yours, `ombridge --home DIR check`, `ombridge --home DIR try ID`
    and `ombridge --home DIR start`. Example: `ombridge init /var/opt/ombridge`
    """
    from ..setup.newhome import create_home

    home = create_home(directory)
    click.echo(f"created home {home.root}: edit {home.script}, then `ombridge --home {home.root} check`")

"""Commands of the backsync side: check and try the home's OMBackSync.pl."""

from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import rich_click as click

from .. import store
from ..errors import ScriptSyntaxError
from ..eventcore import nodes
from ..model import Attempt
from ..ombacksync import protocol
from ..ombacksync.perlenv import load_settings
from ..ombacksync.perlhost import DEFAULT_TIMEOUT, PerlHost, check_syntax
from ..syncback import omisync
from .base import SECONDS, home_of, main, print_json, setup_logging, stdin_ids, store_of
from .report import fail

_PERL_OPTION = click.option("--perl", "perl", metavar="PATH", default=None,
                            help="The perl that runs the script (default: [ombacksync] perl in conf/ombridge.conf).")


def shown(close_id: str | bytes) -> str:
    """An ID as the operator can read it on one line (control characters as \\xNN)."""
    text = protocol.id_bytes(close_id).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def permission_warning(script: Path) -> str | None:
    """A warning when the script is readable by group or others (it may hold credentials)."""
    mode = stat.S_IMODE(script.stat().st_mode)
    if mode & 0o077:
        return (f"{script} is accessible by group or others (mode {mode:04o}); it may hold "
                f"credentials: chmod 600 {script}")
    return None


@main.command()
@click.option("--db", "database", is_flag=True, help="Check the event core (SQLite's integrity check) instead.")
@_PERL_OPTION
@click.pass_context
def check(ctx: click.Context, database: bool, perl: str | None) -> None:
    """Check the home's `conf/backsync/OMBackSync.pl` with `perl -c` (or, with `--db`, the event core).

    Exit 0 when it compiles (is sound), 1 with perl's (SQLite's) own message when it does not.

    Example: `ombridge check` or `ombridge check --db`
    """
    home = home_of(ctx)
    if database:
        conn = store_of(ctx).connect()
        damage, orphans = store.integrity(conn), nodes.audit(conn)
        where = store_of(ctx).describe()
        click.echo("\n".join([*damage[:20], *orphans]), err=True) if damage or orphans else None
        if damage:
            fail(f"{where}: {len(damage)} problem(s) in the event core: {store.recovery(conn)}", 1)
        if orphans:
            fail(f"{where}: claims name nodes that are not in the nodes table: `ombridge nodes forget NAME` "
                 "makes them due again now", 1)
        click.echo(f"{where}: ok")
        return
    try:
        text = check_syntax(home.script, home, load_settings(home, perl))
    except ScriptSyntaxError as exc:
        click.echo(exc.message, err=True)
        sys.exit(1)
    for warning in filter(None, [permission_warning(home.script), *omisync.setting_warnings(home)]):
        click.echo(f"ombridge: warning: {warning}", err=True)
    click.echo(text.rstrip("\n"))


def _print_outcome(outcome: Attempt) -> None:
    if outcome.ok:
        click.echo(f"OK   {shown(outcome.subject)}")
    else:
        click.echo(f"ERR  {shown(outcome.subject)}: {outcome.error}")


@main.command("try")
@click.argument("ids", nargs=-1, required=True)
@click.option("--timeout", type=SECONDS, default=DEFAULT_TIMEOUT, show_default=True,
              help="Seconds one call may take before the child is killed and restarted.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON: id, ok, error and the output tail.")
@click.option("-v", "--verbose", is_flag=True, help="Log the child's life (start, faults, restarts).")
@_PERL_OPTION
@click.pass_context
def try_(ctx: click.Context, ids: tuple[str, ...], timeout: float, as_json: bool, verbose: bool,
         perl: str | None) -> None:
    """Run the home's script in a throwaway perl child: Init, then Close each ID in order.

    Prints one outcome per ID; exits 1 if any failed. `-` reads IDs from stdin, one per line,
    closing each as it arrives (blank lines are skipped). What the script prints goes to stderr.

    Example: `ombridge try EVT-1 "ticket 42"` or `tail -f ids.txt | ombridge try -`
    """
    home = home_of(ctx)
    setup_logging(verbose)
    if any(i == "" for i in ids):
        fail("an ID must not be empty", 2)
    streaming = ids == ("-",)
    failed = False
    results: list[Attempt] = []
    with PerlHost(home, timeout=timeout, settings=load_settings(home, perl)) as host:
        host.start()
        batches = ([i] for i in stdin_ids()) if streaming else iter([list(ids)])
        for batch in batches:
            for outcome in host.deliver_all(batch):
                failed = failed or not outcome.ok
                if as_json:
                    results.append(outcome)
                else:
                    _print_outcome(outcome)
                    sys.stdout.flush()
    if as_json:
        print_json([{"id": shown(o.subject), "ok": o.ok, "error": o.error, "output": o.output} for o in results])
    sys.exit(1 if failed else 0)


"""The root of the command line: the ``ombridge`` group, the home, and what every command shares
(the event core connection, listings as tables or JSON). Commands live in the sibling modules;
:mod:`bridge.cli.app` puts them together.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import rich_click as click

from .. import store
from ..delivery import backsync
from ..errors import BridgeError, UsageError
from ..eventcore.catalog import MAX_RETRIES, MAX_TIMEOUT
from ..home import Home, resolve_home
from ..store import Connection
from ..wording import when  # noqa: F401  (re-exported to the command modules)
from .report import describe_fault, fail, fail_with, reader_gone

click.rich_click.USE_MARKDOWN = True
click.rich_click.SHOW_ARGUMENTS = True


class BridgeGroup(click.RichGroup):
    """The root group: the one place where library errors become messages."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run; a usage error is one line too (``ombridge: error: ...``), with its exit code."""
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
            fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except click.Abort:
            fail("aborted", 1)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BridgeError as exc:
            fail_with(exc)
        except BrokenPipeError:
            reader_gone()
        except (OSError, *store.failures()) as exc:  # a full disk, a read-only home, a damaged core
            message = describe_fault(exc)
            if message is None:
                raise
            fail(message, 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)


def home_of(ctx: click.Context) -> Home:
    """The home of this invocation, resolved when a command first needs it (``init`` never does)."""
    obj = ctx.find_root().obj
    if "home" not in obj:
        obj["home"] = resolve_home(obj.get("home_option"))
    return obj["home"]


# The commands that read a secret take extra words on their command line without complaint from
# click (whose refusal would repeat them, and a password typed there is one of them), so that
# refuse_secret_words says what to do instead, repeating none of them.
SECRET_WORDS = {"allow_extra_args": True, "ignore_unknown_options": True}


def refuse_secret_words(ctx: click.Context, command: str) -> None:
    """Refuse a command given more words than it takes, without repeating them: one of them may
    be the password, typed where ``ps`` shows it to every user of the machine."""
    if ctx.args:
        raise UsageError(f"{command} takes no further word on the command line (a password there can be read "
                         f"by every user of the machine): nothing was changed; type the password at the prompt, or "
                         f"give it on stdin: printf '%s\\n' \"$PW\" | ombridge {command}")


def read_secret(what: str, confirm: bool = False) -> str:
    """A secret from the terminal (asked for, not echoed; twice with ``confirm``) or, when stdin is
    not a terminal, from its next line: never from the command line, where `ps` would show it."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass(f"{what}: ")
        if confirm and getpass.getpass(f"{what} again: ") != first:
            raise UsageError(f"the two {what.lower()}s differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise UsageError(f"no {what.lower()} on stdin (give it as a line of its own)")
    return line.rstrip("\r\n")


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr what the script prints; with ``verbose``, the bridge's own account too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("ombridge")
    root.addHandler(handler)
    # Outcomes and errors are printed by the command itself; the log would only repeat them.
    root.setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    logging.getLogger("ombridge.script").setLevel(logging.INFO)


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", "home", metavar="DIR", default=None,
              help="Home directory (default: $OMBRIDGE_HOME, then $OvDataDir, then the current directory).")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The event core: `postgresql://USER@HOST/DATABASE` (password in ~/.pgpass, never here) "
                   "or `sqlite:` (default: $OMBRIDGE_STORE, then [store] url in conf/ombridge.conf, then the "
                   "home's SQLite file). See docs/multinode.md.")
@click.version_option(package_name="ombridge")
@click.pass_context
def main(ctx: click.Context, home: str | None, store_url: str | None) -> None:
    """**ombridge** runs `OMBackSync.pl` unchanged in a persistent perl child, fed by a durable
    event core of topics, subscribers and an event manager.

    Example: `ombridge --home /var/opt/OV check`
    """
    store.choose(store_url)  # (what this command starts inherits it)
    ctx.obj = {"home_option": home}


def store_of(ctx: click.Context) -> store.Store:
    """The store of this invocation's home: one :class:`bridge.store.Store` per process."""
    obj = ctx.find_root().obj
    if "store" not in obj:
        obj["store"] = store.Store(home_of(ctx))
    return obj["store"]


def core(ctx: click.Context) -> Connection:
    """The home's event core, opened once per invocation (with its built-in topics and the
    backsync subscriber, which exist as soon as a home does)."""
    obj = ctx.find_root().obj
    if "conn" not in obj:
        conn = store_of(ctx).connect()
        backsync.ensure_backsync(conn)
        obj["conn"] = conn
    return obj["conn"]


def audited(ctx: click.Context, what: str) -> None:
    """The audit line of a state change this command made in the store itself, naming the local
    user, appended to the home's ``log/ombridge.log`` (:mod:`bridge.eventcore.audit`)."""
    from ..eventcore import audit

    audit.to_home_log(home_of(ctx).log_dir)
    audit.record(audit.local_user(), what)


def done(ctx: click.Context, message: str) -> None:
    """What a state change did: its audit line, then ``message`` on stdout."""
    audited(ctx, message)
    click.echo(message)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a listing: a rich table on a terminal; piped, plain tab-separated lines with a header
    (a table squeezed to 80 columns folds every cell into slivers; scripts want lines)."""
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    if not sys.stdout.isatty():
        for line in [columns, *cells]:
            click.echo("\t".join(c.replace("\t", " ").replace("\n", " ") for c in line))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in cells:
        t.add_row(*r)
    Console().print(t)


def listing(as_json: bool, data: Any, title: str, columns: list[str], cells: list[list[Any]]) -> None:
    """What every listing prints: ``data`` as JSON with ``--json``, else ``cells`` as a table."""
    if as_json:
        print_json(data)
    else:
        table(title, columns, cells)


# Numbers an operator types, refused outside sane, finite ranges before anything is stored.
ROW_ID = click.IntRange(min=1, max=2**63 - 1)
SECONDS = click.FloatRange(min=0.001, max=MAX_TIMEOUT)  # timeouts: a week at most, never inf or nan
RETRIES = click.IntRange(min=0, max=MAX_RETRIES)
LIMIT = click.IntRange(min=1, max=1_000_000)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def stdin_ids() -> Iterator[bytes]:
    """The non-empty lines of stdin as bytes, as they arrive (an ID need not be valid UTF-8 here:
    whoever uses it names a bad one instead of failing on the whole input)."""
    for line in sys.stdin.buffer:
        close_id = line.rstrip(b"\n").rstrip(b"\r")
        if close_id:
            yield close_id

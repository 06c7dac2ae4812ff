"""The ``ombridge`` command line: parse, call one library function, print.

Library errors (:class:`bridge.errors.BridgeError`) become one sentence on stderr and the
error's exit code, here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, NoReturn

import rich_click as click

from ..errors import BridgeError
from ..home import Home, resolve_home

click.rich_click.USE_MARKDOWN = True
click.rich_click.SHOW_ARGUMENTS = True


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear error sentence to stderr and exit with ``code``."""
    click.echo(f"ombridge: error: {message}", err=True)
    sys.exit(code)


class BridgeGroup(click.RichGroup):
    """The root group: the one place where library errors become messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BridgeError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)


def home_of(ctx: click.Context) -> Home:
    """The resolved home of this invocation."""
    return ctx.find_root().obj["home"]


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
@click.version_option(package_name="ombridge")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """**ombridge** runs `OMBackSync.pl` unchanged in a persistent perl child, fed by a durable
    event core of topics, subscribers and an event manager.

    Example: `ombridge --home /var/opt/OV check`
    """
    try:
        ctx.obj = {"home": resolve_home(home)}
    except BridgeError as exc:
        fail(str(exc), exc.exit_code)


from . import backsync, events, operate, supervise, users  # noqa: E402,F401  (registers the commands)

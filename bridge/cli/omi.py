"""Commands of the sync back to OMi's gateway: omi password, omi test, omi close.

The password is the connected server's *incoming connection* password in OMi; it comes from a
prompt (asked twice) or, when stdin is not a terminal, from its first line, and is stored
owner-only in ``conf/omi-password``: never on a command line, never printed.
"""

from __future__ import annotations

import rich_click as click

from ..client.control import ring
from .base import (
    SECRET_WORDS,
    done,
    home_of,
    main,
    read_secret,
    refuse_secret_words,
    store_of,
)


@main.group()
def omi() -> None:
    """Sync back to OMi: changes of OMi events sent to OMi's gateway (docs/omi.md)."""


@omi.command("password", context_settings=SECRET_WORDS)
@click.pass_context
def omi_password(ctx: click.Context) -> None:
    """Store the password of OMi's connected server (its incoming connection), asked for or read
    from stdin's first line. Example: `printf '%s\\n' "$PW" | ombridge omi password`"""
    from ..syncback.omisync import set_password

    refuse_secret_words(ctx, "omi password")
    set_password(home_of(ctx), read_secret("Password", confirm=True))
    done(ctx, "OMi password stored")


@omi.command("test")
@click.pass_context
def omi_test(ctx: click.Context) -> None:
    """HEAD OMi's gateway with the stored credentials; one line saying what answered.
    Example: `ombridge omi test`"""
    from ..syncback.omisync import clear_text_warning, load_config, test_gateway

    warning = clear_text_warning(load_config(home_of(ctx)))
    if warning:
        click.echo(f"ombridge: warning: {warning}", err=True)
    click.echo(test_gateway(home_of(ctx)))


@omi.command("close")
@click.argument("external_id", metavar="ID")
@click.option("--annotation", metavar="TEXT", default=None, help="An annotation added to the OMi event.")
@click.pass_context
def omi_close(ctx: click.Context, external_id: str, annotation: str | None) -> None:
    """Close the OMi event(s) behind external id ID (sends `omi/change` {"ID": ID, "STATE": "closed"}).
    Example: `ombridge omi close INC-42 --annotation "resolved in the ticket"`"""
    from ..syncback.omitopic import send_close

    root = home_of(ctx).root
    event = send_close(store_of(ctx), external_id, annotation, on_stored=lambda: ring(root))
    click.echo(f"event {event} stored: the close of {external_id} goes to OMi")

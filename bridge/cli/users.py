"""Commands for the users of the HTTP listener: user add, list, remove, passwd.

Passwords come from a prompt (asked twice) or, when stdin is not a terminal, from its first line;
never from the command line, where any user of the machine could read them in the process list.
"""

from __future__ import annotations

import rich_click as click

from ..errors import UsageError
from .base import (
    SECRET_WORDS,
    core,
    done,
    json_option,
    listing,
    main,
    read_secret,
    refuse_secret_words,
    when,
)


@main.group()
def user() -> None:
    """Users of the HTTP listener (OMi's connected server, the event API): HTTP Basic credentials."""


@user.command("add", context_settings=SECRET_WORDS)
@click.argument("name")
@click.pass_context
def user_add(ctx: click.Context, name: str) -> None:
    """Create user NAME; the password is asked for (or read from stdin's first line).

    Stored only as a salted scrypt hash in the event core. Example:
    `ombridge user add omi` or `printf '%s\\n' "$PW" | ombridge user add omi`
    """
    from ..web.users import add_user, check_name

    refuse_secret_words(ctx, "user add NAME")
    check_name(name)
    conn = core(ctx)
    if _exists(conn, name):  # said before a password is typed for nothing (add_user checks again)
        raise UsageError(f"user {name} exists (change the password with: ombridge user passwd {name})")
    add_user(conn, name, read_secret("Password", confirm=True))
    done(ctx, f"user {name} added")


def _exists(conn: object, name: str) -> bool:
    from ..web.users import list_users

    return any(u["name"] == name for u in list_users(conn))  # type: ignore[arg-type]


@user.command("passwd", context_settings=SECRET_WORDS)
@click.argument("name")
@click.pass_context
def user_passwd(ctx: click.Context, name: str) -> None:
    """Change the password of user NAME (a running listener uses it within a second).

    Example: `ombridge user passwd omi`
    """
    from ..errors import NotFound
    from ..web.users import set_password

    refuse_secret_words(ctx, "user passwd NAME")
    conn = core(ctx)
    if not _exists(conn, name):  # said before a password is typed for nothing
        raise NotFound(f"no user {name}")
    set_password(conn, name, read_secret("Password", confirm=True))
    done(ctx, f"password of {name} changed")


@user.command("list")
@json_option
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    """List the users (names and dates; never a hash). Example: `ombridge user list --json`"""
    from ..web.users import list_users

    rows = list_users(core(ctx))
    listing(as_json, rows, "Users", ["name", "created", "password changed"],
            [[r["name"], when(r["created_at"]), when(r["updated_at"])] for r in rows])


@user.command("remove")
@click.argument("name")
@click.pass_context
def user_remove(ctx: click.Context, name: str) -> None:
    """Delete user NAME; its requests are refused within a second. Example: `ombridge user remove omi`"""
    from ..web.users import remove_user

    remove_user(core(ctx), name)
    done(ctx, f"user {name} removed")

"""Pausing a subscriber (``subscriber pause`` / ``resume``): held on every node, nothing lost
(:mod:`bridge.eventcore.pauses`; docs/operations.md, "Pause or disable")."""

from __future__ import annotations

import rich_click as click

from ..client.control import ring
from ..eventcore import audit, pauses
from ..wording import pause_answer
from .base import ROW_ID, core, done, home_of
from .events import subscriber


@subscriber.command("pause")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.pass_context
def subscriber_pause(ctx: click.Context, subscriber_id: int) -> None:
    """Pause a subscriber on every node (the backsync too): its events are still stored and its
    deliveries made and kept, OMi and `close` answered as usual, but none runs until `resume`.
    Already paused: said, exit 0. Example: `ombridge subscriber pause 1`"""
    change = pauses.pause(core(ctx), subscriber_id, audit.local_user())
    if change.changed:
        done(ctx, pause_answer(change))
    else:
        click.echo(pause_answer(change))


@subscriber.command("resume")
@click.argument("subscriber_id", metavar="ID", type=ROW_ID)
@click.pass_context
def subscriber_resume(ctx: click.Context, subscriber_id: int) -> None:
    """Resume a paused subscriber: what waited runs now, oldest first, on every node. Not paused:
    said, exit 0. Example: `ombridge subscriber resume 1`"""
    change = pauses.resume(core(ctx), subscriber_id)
    if change.changed:
        ring(home_of(ctx).root)  # (other nodes: woken by the resume's NOTIFY)
        done(ctx, pause_answer(change))
    else:
        click.echo(pause_answer(change))

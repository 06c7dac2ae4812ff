"""Commands of the event core's store itself: store copy (docs/multinode.md, "Moving a home to
PostgreSQL")."""

from __future__ import annotations

import rich_click as click

from ..home import Home
from ..store import urls
from .base import home_of, main, print_json

_SUMMARY = ("events", "subscriber_events", "attempts", "users", "omi_events")  # the tables the summary line names


@main.group("store")
def store_group() -> None:
    """The event core's store: copy it into another one (SQLite to PostgreSQL, and back)."""


@store_group.command("copy")
@click.option("--to", "to", metavar="URL", required=True,
              help="The empty store to fill: `postgresql://USER@HOST/DATABASE` (password in ~/.pgpass, never "
                   "here), `sqlite:PATH`, or `sqlite:` for the home's own file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def store_copy(ctx: click.Context, to: str, as_json: bool) -> None:
    """Copy the home's event core (its store as chosen today) into the empty store URL, ids
    kept, in one transaction. Refused while the supervisor runs.

    Example: `ombridge stop && ombridge store copy --to postgresql://ombridge@db.example.com/ombridge`
    """
    from ..setup.storecopy import NOUNS, copy, phrase

    done = copy(home_of(ctx), to)
    counts = dict(done.counts)
    if as_json:
        print_json({"source": done.source, "target": done.target, "tables": counts, "released": done.released})
        return
    width = max(len(t) for t in counts)
    for table, n in done.counts:
        click.echo(f"{table:<{width}}  {n:>12,}")
    what = ", ".join(phrase(counts.get(t, 0), NOUNS[t]) for t in _SUMMARY)
    released = f" ({phrase(done.released, 'open claim')} released: due again)" if done.released else ""
    hint = _hint(done.target_url, home_of(ctx))
    click.echo(f"copied the event core of {done.source} to {done.target}: {what}{released}; {hint}")


def _hint(url: str, home: Home) -> str:
    """What the operator does next to use the copy."""
    if not urls.file_of(url):
        return f'point the home at it with [store] url = "{url}" in conf/ombridge.conf'
    if urls.file_of(url) == str(home.db):
        return "point the home back at it: remove [store] url from conf/ombridge.conf (or set it to \"sqlite:\")"
    return "a home reads its own datafiles/ombridge.db: move the file there to use it"

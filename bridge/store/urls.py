"""Store URLs as operators give them: ``postgresql://USER@HOST/DATABASE`` (or libpq's
``key=value``), ``sqlite:PATH`` for a file, ``sqlite:`` for the home's own file; and the
connection each names (``store copy`` uses them: the only place above the seam that names a
store other than the home's)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import UsageError
from ..home import Home

FILE = "sqlite:"


def target(home: Home, to: str) -> str:
    """``to`` as a whole store URL: ``sqlite:`` the home's own file, ``sqlite:PATH`` any file (made
    absolute), a PostgreSQL URL checked (never one holding a password)."""
    if to == FILE:
        return FILE + str(home.db)
    if to.startswith(FILE):
        return FILE + os.path.abspath(os.path.expanduser(to[len(FILE):]))
    from . import is_postgresql

    if is_postgresql(to):
        from . import pgstore

        pgstore.check_url(to)
        return to
    raise UsageError(f"unknown store {to!r}: --to takes a postgresql://USER@HOST/DATABASE URL, sqlite:PATH, "
                     "or sqlite: for the home's own file")


def file_of(url: str) -> str:
    """The file a ``sqlite:PATH`` URL names ('' for a database server's URL)."""
    return url[len(FILE):] if url.startswith(FILE) else ""


def name_of(url: str) -> str:
    """The store of ``url`` as an operator names it: the file, or the database and its host."""
    if url.startswith(FILE):
        return url[len(FILE):]
    from . import pgstore

    return pgstore.where(url)


def same(home: Home, source_url: str, target_url: str) -> bool:
    """Whether ``target_url`` names the store the home's ``source_url`` ('' : its own file) names."""
    if target_url.startswith(FILE):
        return source_url in ("", FILE) and os.path.realpath(file_of(target_url)) == os.path.realpath(home.db)
    return source_url not in ("", FILE) and name_of(source_url) == name_of(target_url)


def open_url(url: str, node: str) -> Any:
    """A connection to the store ``url`` names, its schema migrated (a file is created owner-only)."""
    if url.startswith(FILE):
        from . import open_file

        return open_file(file_of(url))
    from . import pgstore

    return pgstore.connect(url, node=node)

"""``ombridge init DIR``: a new home, laid out like the connector's data directory.

A directory is a home when it holds ``conf/backsync/OMBackSync.pl`` or an event core
(:func:`bridge.home.is_home`). ``init`` creates one only in a new or empty directory: a home is
never overwritten (its script may be the only copy of years of work), and a folder that holds
other things is most likely a typo.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import BridgeError, UsageError
from ..home import Home, is_home


def create_home(root: str | os.PathLike[str]) -> Home:
    """Create a home at ``root`` (a new or empty directory) with the bundled example script.

    The script is owner-only (it may come to hold credentials), and so are ``datafiles/``,
    ``log/`` and ``run/``; ``tmp/`` is where the example writes. The event core is created with
    its built-in topics and the backsync subscriber. Raises :class:`UsageError` for a path that
    already is a home, is not a directory or is not empty; nothing is left behind on a failure.
    """
    from .. import bundled, store
    from ..eventcore import builtins

    if not os.fspath(root):
        raise UsageError("name the directory of the new home, e.g. ombridge init /var/opt/ombridge")
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if is_home(path):
        raise UsageError(f"{path} is already an ombridge home")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"{path} is not empty: ombridge init creates a home in a new or empty directory")
    example = bundled.example_script()
    created = not path.exists()
    home = Home(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        home.script.parent.mkdir(parents=True)
        # Owner-only from the first byte: the file is opened 0600, never chmodded after writing.
        with open(os.open(home.script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(example.read_bytes())
        home.ensure_layout()
        home.private_dir(home.log_dir)
        home.private_dir(home.run_dir)
        conn = store.Store(home).connect()
        try:
            builtins.ensure_all(conn)
        finally:
            conn.close()
    except OSError as exc:
        _undo(path, created)
        raise BridgeError(f"cannot create a home in {path}: {exc.strerror or exc}") from exc
    except BaseException:
        _undo(path, created)
        raise
    return home


def _undo(path: Path, created: bool) -> None:
    # Take back what this call made; a directory that existed (empty) before stays, emptied again.
    if created:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)

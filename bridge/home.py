"""The home directory: where the script, the event core, logs and control files live.

Laid out like the connector's data directory (``$OvDataDir``), so scripts written for it
(``"$ENV{OvDataDir}/tmp/..."``) run unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError


@dataclass(frozen=True)
class Home:
    """Paths under one ombridge home."""

    root: Path

    @property
    def script(self) -> Path:
        """The user's ``OMBackSync.pl``."""
        return self.root / "conf" / "backsync" / "OMBackSync.pl"

    @property
    def tmp(self) -> Path:
        """Where the example script writes ``OMBSOutput.txt``."""
        return self.root / "tmp"

    @property
    def output(self) -> Path:
        """The example script's output file."""
        return self.tmp / "OMBSOutput.txt"

    @property
    def datafiles(self) -> Path:
        """The event core's folder (owner-only)."""
        return self.root / "datafiles"

    @property
    def db(self) -> Path:
        """The event core's SQLite file."""
        return self.datafiles / "ombridge.db"

    @property
    def log_dir(self) -> Path:
        """The supervisor's logs."""
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        """Pid file, lock and control socket (owner-only)."""
        return self.root / "run"

    def perl_env(self) -> dict[str, str]:
        """The environment of every perl this home runs: ours, with ``OvDataDir`` set to the home."""
        env = dict(os.environ)
        env["OvDataDir"] = str(self.root)
        return env

    def ensure_layout(self) -> None:
        """Create the folders scripts written for the connector expect (``tmp/``)."""
        self.tmp.mkdir(parents=True, exist_ok=True)

    def private_dir(self, path: Path) -> Path:
        """Create ``path`` (and parents) if missing, owner-only; returns it."""
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return path


def resolve_home(option: str | os.PathLike[str] | None = None) -> Home:
    """Resolve the home: ``--home`` > ``$OMBRIDGE_HOME`` > ``$OvDataDir`` > the current directory."""
    for candidate in (option, os.environ.get("OMBRIDGE_HOME"), os.environ.get("OvDataDir")):
        if candidate:
            root = Path(candidate).expanduser()
            break
    else:
        root = Path.cwd()
    if root.exists() and not root.is_dir():
        raise UsageError(f"home {root} is not a directory")
    return Home(root.resolve())

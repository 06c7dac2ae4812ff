"""The home directory: where the script, the event core, logs and control files live.

Laid out like the connector's data directory (``$OvDataDir``), so scripts written for it
(``"$ENV{OvDataDir}/tmp/..."``) run unchanged.
"""

from __future__ import annotations

import os

from .errors import UsageError

TYPE_CHECKING = False  # pathlib and typing cost more than a whole `ombridge send`: imported late
if TYPE_CHECKING:
    from pathlib import Path

DB_FILE = os.path.join("datafiles", "ombridge.db")
SCRIPT = os.path.join("conf", "backsync", "OMBackSync.pl")


class Home:
    """Paths under one ombridge home (a value: equal when the roots are equal)."""

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from pathlib import Path

        self.root = Path(root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Home) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Home({str(self.root)!r})"

    @property
    def script(self) -> Path:
        """The user's ``OMBackSync.pl``."""
        return self.root / SCRIPT

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
        return self.root / DB_FILE

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


def is_home(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` holds ``conf/backsync/OMBackSync.pl`` or an event core."""
    return any(os.path.exists(os.path.join(root, part)) for part in (SCRIPT, DB_FILE))


class NotAHome(UsageError):
    """A directory that holds neither a script nor an event core: most likely a typo."""


def resolve_root(option: str | os.PathLike[str] | None = None, *, existing: bool = True) -> str:
    """The home's absolute path: ``--home`` > ``$OMBRIDGE_HOME`` > ``$OvDataDir`` > the current directory.

    With ``existing`` (the default) the directory must already be a home (:func:`is_home`): a
    mistyped path must not quietly become a second, empty bridge.
    """
    for source, candidate in (("--home", option), ("$OMBRIDGE_HOME", os.environ.get("OMBRIDGE_HOME")),
                              ("$OvDataDir", os.environ.get("OvDataDir"))):
        if candidate:
            root = os.path.expanduser(os.fspath(candidate))
            break
    else:
        source, root = "the current directory", os.getcwd()
    if os.path.exists(root) and not os.path.isdir(root):
        raise UsageError(f"home {root} ({source}) is not a directory")
    root = os.path.realpath(root)
    if existing and not is_home(root):
        raise NotAHome(f"{root} ({source}) is not an ombridge home: it has no {SCRIPT} and no {DB_FILE}; "
                       f"give --home DIR, or create one with `ombridge init {root}`")
    return root


def resolve_home(option: str | os.PathLike[str] | None = None, *, existing: bool = True) -> Home:
    """The home, resolved as :func:`resolve_root` does."""
    return Home(resolve_root(option, existing=existing))

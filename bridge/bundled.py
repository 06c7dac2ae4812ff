"""The files that ship with ombridge: the perl host and the example ``OMBackSync.pl``.

In the repository they live at the top, in ``perl/`` and ``conf/backsync/`` (the repository
doubles as the example home). A wheel carries them as package data of ``bridge.perl`` and
``bridge.example`` (``pyproject.toml`` maps those packages onto the two folders), and they are
found through :mod:`importlib.resources`, wherever pip or pipx put the package. A checkout
installed editable in setuptools' compat mode (the Makefile's) has no such packages: there the
files are read from the checkout itself.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BridgeError

_CHECKOUT = Path(__file__).resolve().parent.parent


def perl_dir() -> Path:
    """The folder of the perl side: ``ombridge_host.pl`` and ``check/OMBridgeCheck.pm``.

    Never raises (it is looked up when :mod:`bridge.ombacksync.perlenv` is imported): in a broken
    installation it names the checkout's folder, and starting perl then fails with perl's message.
    """
    found = _find("bridge.perl", "ombridge_host.pl", _CHECKOUT / "perl")
    return found.parent if found is not None else _CHECKOUT / "perl"


def example_script() -> Path:
    """The bundled example ``OMBackSync.pl`` (what ``ombridge init`` copies into a new home)."""
    found = _find("bridge.example", "OMBackSync.pl", _CHECKOUT / "conf" / "backsync")
    if found is None:
        raise BridgeError("the example OMBackSync.pl is missing from this installation of ombridge: reinstall it")
    return found


def _find(package: str, name: str, checkout_dir: Path) -> Path | None:
    import importlib.resources  # ~2 ms: only the backsync side pays it

    try:
        resource = importlib.resources.files(package) / name
    except ModuleNotFoundError:  # an editable checkout in compat mode: no such package
        resource = None
    # perl needs a real file; a package imported from a zip archive is not supported.
    if isinstance(resource, Path) and resource.is_file():
        return resource
    fallback = checkout_dir / name
    return fallback if fallback.is_file() else None

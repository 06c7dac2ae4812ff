"""Console-script entry point of ``ombridge``.

``send`` and ``key get`` are called from scripts and subscribers, often in loops: when their
arguments are plain, they run here without importing the CLI framework (rich-click costs more
than the whole send). Anything else, help included, goes to the full CLI in :mod:`bridge.cli`.
docs/decisions.md ("`ombridge send` start-up") says what the fast path imports and why.
"""

from __future__ import annotations

import gc
import sys


def _option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of a leading ``name V`` or ``name=V`` (None when absent), and the rest of ``argv``."""
    if len(argv) >= 2 and argv[0] == name:
        return argv[1], argv[2:]
    if argv and argv[0].startswith(name + "="):
        return argv[0].split("=", 1)[1], argv[1:]
    return None, argv


def _fast(argv: list[str]) -> int | None:
    """Run a plain ``send``/``key get``; None when the full CLI must handle ``argv``."""
    home, argv = _option(argv, "--home")
    url, argv = _option(argv, "--store")  # (after --home, as the CLI takes them)
    if url is not None:  # as store.choose (store.STORE_ENV), without importing it for `key get`
        import os

        os.environ["OMBRIDGE_STORE"] = url
    force = False
    if argv[:1] == ["send"] and argv[-1:] == ["--force"]:
        force, argv = True, argv[:-1]
    plain = all(not a.startswith("-") for a in argv[1:])
    if len(argv) == 3 and argv[0] == "send" and plain:
        from . import store
        from .cli.report import print_send
        from .delivery import sending
        from .home import resolve_root

        _imported()
        root = resolve_root(home)
        return print_send(sending.send(store.connect(root), argv[1], argv[2], force, cwd=root,
                                       on_stored=lambda: _ring(root)))
    if len(argv) == 4 and argv[:2] == ["key", "get"] and plain and not force:
        from .eventcore.events import key_field

        _imported()
        print(key_field(argv[2], argv[3]))
        return 0
    return None


def _imported() -> None:
    # The fast path's modules are imported (with the collector off, see main): what they made
    # lives as long as the process, so the collector leaves it alone from now on instead of
    # walking it again at each collection and at exit (a tenth of a send's instructions).
    gc.freeze()
    gc.enable()


def _ring(root: str) -> None:
    # The doorbell (and the _socket extension under it, ~1 ms of a send's start-up) is imported
    # only when a supervisor has a doorbell to ring; without one the Event Manager is not running.
    import os

    if not os.path.exists(os.path.join(root, "run", "doorbell.sock")):
        return
    from .doorbell import ring

    ring(root)


def main() -> None:
    """Run the command line; a reader that went away (``ombridge status | head -1``) ends it
    quietly, as it ends ``cat`` (exit 141, 128 + SIGPIPE), never with a traceback."""
    try:
        _main()
    except BrokenPipeError:
        from .cli.report import reader_gone

        reader_gone()


def _main() -> None:
    gc.disable()  # imports make many objects and no garbage: collecting during them is wasted
    from .errors import BridgeError

    try:
        code = _fast(sys.argv[1:])
    except BridgeError as exc:
        from .cli.report import fail_with

        fail_with(exc)
    except BrokenPipeError:
        raise  # (main ends quietly)
    except Exception as exc:  # a full disk, a read-only home, a damaged event core: one sentence
        from .cli.report import describe_fault, fail

        message = describe_fault(exc)
        if message is None:
            raise
        fail(message, 1)
    if code is not None:
        sys.exit(code)
    gc.enable()
    from .cli.app import main as cli_main

    cli_main()

"""How the command line answers: the one place a library error becomes a message and an exit
code. The wording it shares with the console (times, counts, histories) is :mod:`bridge.wording`'s.

Kept free of the CLI framework: ``ombridge send`` and ``key get`` use it on their fast path.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from ..errors import BridgeError
    from ..eventcore.events import SendResult


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear error sentence to stderr and exit with ``code``."""
    print(f"ombridge: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def reader_gone() -> NoReturn:
    """The reader of stdout went away (``ombridge status | head -1``): end quietly, as ``cat``
    does (exit 141, 128 + SIGPIPE), never with a traceback or an error about it."""
    import os

    # Python would report the BrokenPipeError of flushing stdout at exit: flush into nothing.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)


def fail_with(exc: BridgeError) -> NoReturn:
    """A library error as the command line reports it: its sentence and its exit code."""
    fail(str(exc), exc.exit_code)


NOT_STORED = 3  # the exit code of `send` when nobody listens and nothing was stored


def print_send(result: SendResult) -> int:
    """What ``send`` did: the event id on stdout, or on stderr that nobody listens; a note for
    each synchronized subscriber that failed. Returns the exit code (:data:`NOT_STORED` when
    nothing was stored, so that scripts can tell)."""
    if result.event_id is None:
        print("ombridge: nobody listens: the event was not stored (use --force to store it anyway)",
              file=sys.stderr)
        return NOT_STORED
    print(result.event_id, flush=True)
    for sid in result.failed_synchronized():
        print(f"synchronized subscriber {sid} failed; the Event Manager will retry it", file=sys.stderr)
    return 0


def describe_fault(exc: BaseException) -> str | None:
    """One sentence for a fault of the machine that reached the command line (a full disk, a
    read-only home, a damaged event core, a database away); None for anything else (a bug: let
    it show)."""
    from ..store.failures import describe

    said = describe(exc)
    if said is None and isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return said

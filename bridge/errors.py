"""The one tree of errors the library raises; the CLI turns each into one clear sentence.

Every error carries the data an operator needs (the file, perl's message, the pid, the exit
status) and an ``exit_code`` for the command line.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error ombridge raises on purpose."""

    exit_code = 1


class UsageError(BridgeError):
    """Bad input from the operator: refused before anything is written."""

    exit_code = 2


class NotFound(UsageError):
    """A named thing (topic, subscriber, event, integration) does not exist."""


class ScriptSyntaxError(BridgeError):
    """``perl -c`` refused the script; ``message`` is perl's own text."""

    def __init__(self, script: str, message: str) -> None:
        super().__init__(f"{script} does not compile:\n{message}")
        self.script = script
        self.message = message


class RestartRefused(ScriptSyntaxError):
    """A restart found the new script broken; the running ombacksync was kept."""

    def __init__(self, script: str, message: str) -> None:
        super().__init__(script, message)
        self.args = (f"{script} does not compile; the running ombacksync was kept:\n{message}",)


class PerlStartError(BridgeError):
    """The perl child could not be started: the script failed to load or Init died."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class PerlFault(BridgeError):
    """The perl child stopped serving: it exited, timed out or broke the line protocol.

    ``replaced_by`` names the program that took the host's place when the script called
    ``exec`` (the process lives on as that program, whose end is the call's end).
    """

    def __init__(self, reason: str, pid: int | None = None, status: int | None = None,
                 replaced_by: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pid = pid
        self.status = status
        self.replaced_by = replaced_by


class ProtocolError(PerlFault):
    """The perl child wrote a line that is not part of the protocol."""

    def __init__(self, line: bytes, pid: int | None = None) -> None:
        super().__init__(f"protocol error: unexpected line {line[:200]!r} from the perl child", pid)
        self.line = line


class StoreError(BridgeError):
    """The event core cannot be used as it is (a damaged or full file, a bad store URL, the
    database away)."""


class StoreUnavailable(StoreError):
    """The event core's database cannot be reached now (a server away or restarting): a new
    connection later may succeed. The one error the store seam raises for it."""


class NotRunning(BridgeError):
    """The supervisor is not running (LSB exit code 3)."""

    exit_code = 3


class AlreadyRunning(BridgeError):
    """Another supervisor holds this home."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"a supervisor already runs in this home (pid {pid})")
        self.pid = pid


class SchemaTooNew(StoreError):
    """The shared database's schema is newer than this ombridge knows: it refuses to use it."""

    def __init__(self, where: str, version: int, known: int) -> None:
        super().__init__(f"{where} has schema version {version}; this ombridge knows up to {known}: "
                         "upgrade ombridge on this node")
        self.version = version
        self.known = known

"""The model: every state and status ombridge knows, as ``str`` Enums, and the result of one attempt.

Nothing else in the package spells a state or a status as a literal: the values below are
stored in SQLite as they are (``DeliveryStatus.OPEN == "open"``) and shown by ``status``.
The module is imported by ``ombridge send``, so it stays free of typing and dataclasses.
"""

from __future__ import annotations

from enum import Enum


class DeliveryStatus(str, Enum):
    """A subscriber event (one delivery of one event to one subscriber)."""

    OPEN = "open"  # due now or later (or claimed under a lease)
    DONE = "done"  # an attempt succeeded
    FAILED = "failed"  # its retries were used up; `ombridge retry` reopens it
    PURGED = "purged"  # dropped by the operator (`ombridge subscriber purge`)


class Settlement(str, Enum):
    """What recording an attempt did to its delivery."""

    DONE = "done"
    RETRY = "open"  # failed, open again after a backoff
    FAILED = "failed"
    STALE = "stale"  # the claim was no longer current: only the attempt was recorded


class ActionKind(str, Enum):
    """What a subscriber does with an event."""

    COMMAND = "command"  # a command string with &VAR substitution, run by /bin/sh -c
    PROGRAM = "program"  # an event program: argv = [program, topic, key JSON], no shell
    WEB = "web"  # HTTP POST of the event as JSON
    BACKSYNC = "backsync"  # the built-in: OMBackSync('Close', &ID) in the persistent perl child
    OMI = "omi"  # the built-in sync back: omi/change -> event_change to OMi's gateway (bridge/syncback/omisync.py)


class Lane(str, Enum):
    """Which lanes of the Event Manager deliver a subscriber event (stored with it, indexed)."""

    ACTIONS = "actions"  # commands, programs and web calls, one at a time per lane
    BACKSYNC = "backsync"  # Closes in the persistent perl children, in batches
    OMI = "omi"  # the sync back to OMi's gateway, in a lane of its own

    @classmethod
    def of(cls, action: str) -> Lane:
        """The lane of a subscriber's action."""
        return cls.BACKSYNC if action == ActionKind.BACKSYNC else cls.OMI if action == ActionKind.OMI else cls.ACTIONS


class SupervisorState(str, Enum):
    """The supervisor's life: STARTING -> RUNNING -> STOPPING -> STOPPED, never back."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class HostState(str, Enum):
    """The life of ombacksync (the persistent perl child), as ``status`` shows it."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # waiting to restart after a fault or a failed start (tried again forever)
    SYNTAX_ERROR = "syntax-error"  # perl -c refused the script: an operator must act


class ManagerState(str, Enum):
    """The Event Manager's life: STOPPED -> RUNNING -> STOPPING -> STOPPED."""

    STOPPED = "stopped"
    RUNNING = "running"
    STOPPING = "stopping"


class LaneState(str, Enum):
    """One Event Manager lane, as ``status`` shows it."""

    BUSY = "busy"  # delivering a claim or a batch
    IDLE = "idle"  # waiting for the doorbell, a due retry or the poll
    STOPPED = "stopped"


class IllegalTransition(RuntimeError):
    """A state machine was asked for a move its table does not have: a bug, refused loudly."""


def check_transition(table: dict[Enum, frozenset[Enum]], old: Enum, new: Enum, machine: str) -> None:
    """Refuse a move from ``old`` to ``new`` that ``table`` (old -> the states it may become) lacks."""
    if new not in table[old]:
        raise IllegalTransition(f"{machine} cannot go from {old.value} to {new.value}")


_H = HostState
HOST_MOVES: dict[Enum, frozenset[Enum]] = {
    _H.STOPPED: frozenset({_H.STARTING, _H.STOPPED}),  # (stopping a stopped host is no move)
    _H.STARTING: frozenset({_H.RUNNING, _H.BACKOFF, _H.SYNTAX_ERROR}),
    _H.RUNNING: frozenset({_H.STARTING, _H.BACKOFF, _H.STOPPED}),  # a start replaces the child
    _H.BACKOFF: frozenset({_H.STARTING, _H.STOPPED}),
    _H.SYNTAX_ERROR: frozenset({_H.STARTING, _H.STOPPED}),
}
MANAGER_MOVES: dict[Enum, frozenset[Enum]] = {
    ManagerState.STOPPED: frozenset({ManagerState.RUNNING}),
    ManagerState.RUNNING: frozenset({ManagerState.STOPPING}),
    ManagerState.STOPPING: frozenset({ManagerState.STOPPED}),  # once the last lane has ended
}
LANE_MOVES: dict[Enum, frozenset[Enum]] = {
    LaneState.IDLE: frozenset({LaneState.BUSY, LaneState.STOPPED}),
    LaneState.BUSY: frozenset({LaneState.IDLE, LaneState.STOPPED}),
    LaneState.STOPPED: frozenset(),
}


class ListenerState(str, Enum):
    """The HTTP listener's life (``start --listen``): OFF when nobody asked for one."""

    OFF = "off"
    STOPPED = "stopped"
    LISTENING = "listening"
    STOPPING = "stopping"
    FAILED = "failed"


SUPERVISOR_MOVES: dict[Enum, frozenset[Enum]] = {  # never back
    SupervisorState.STARTING: frozenset({SupervisorState.RUNNING, SupervisorState.STOPPING}),
    SupervisorState.RUNNING: frozenset({SupervisorState.STOPPING}),
    SupervisorState.STOPPING: frozenset({SupervisorState.STOPPED}),
    SupervisorState.STOPPED: frozenset(),
}

LISTENER_MOVES: dict[Enum, frozenset[Enum]] = {  # OFF is never a listener's: status shows it when none was asked
    ListenerState.STOPPED: frozenset({ListenerState.LISTENING, ListenerState.FAILED}),  # (FAILED: died starting)
    ListenerState.LISTENING: frozenset({ListenerState.STOPPING, ListenerState.FAILED}),
    ListenerState.FAILED: frozenset({ListenerState.STOPPING}),
    ListenerState.STOPPING: frozenset({ListenerState.STOPPED, ListenerState.FAILED}),
    ListenerState.OFF: frozenset(),
}


class NodeState(str, Enum):
    """A node of the event core as the ``nodes`` table shows it (bridge/eventcore/nodes.py): derived from its
    row at each reading (a heartbeat within the dead-node limit, or a clean stop), never stored."""

    RUNNING = "running"
    DEAD = "dead"
    STOPPED = "stopped"


OUTPUT_TAIL = 4096  # bytes of output an attempt keeps (the last ones)


class Attempt:
    """The one result type of one attempt, whatever ran it (a command, a web call, a Close).

    ``attempted`` is False when the call never reached its target (the perl child was down or
    restarted before it): recording it would count an attempt that did not happen, so it is
    given back instead. ``final`` marks a failure no retry can mend (OMi's gateway answered
    401/403/404): the delivery fails at once, ``ombridge retry`` reopens it. ``subject`` names what was attempted where the caller needs it (the ID
    of a Close). A plain class: a dataclass or NamedTuple would cost ``ombridge send`` its import.
    """

    __slots__ = ("ok", "started_at", "ended_at", "exit_status", "output", "error", "attempted", "subject", "final")

    def __init__(self, ok: bool, started_at: float, ended_at: float, exit_status: int | None = None,
                 output: str = "", error: str | None = None, *, attempted: bool = True,
                 subject: str | bytes | None = None, final: bool = False) -> None:
        self.ok = ok
        self.started_at = started_at
        self.ended_at = ended_at
        self.exit_status = exit_status
        self.output = output
        self.error = error
        self.attempted = attempted
        self.subject = subject
        self.final = final  # a failure no retry can mend (the target refused it): failed at once

    def values(self) -> tuple[object, ...]:
        """Every field, in order."""
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attempt) and self.values() == other.values()

    def __repr__(self) -> str:
        return "Attempt(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

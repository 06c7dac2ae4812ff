"""The nodes that share one event core: who runs where, whether it is alive, and who takes over
the claims of one that died (docs/multinode.md).

A node is a running supervisor, named by ``[store] node`` in ``conf/ombridge.conf`` (default
``<hostname>:<home>``). It owns the ``nodes`` table: it joins at its start (taking back what its
own earlier runs left claimed), heartbeats every :data:`HEARTBEAT_EVERY` seconds from a thread of
its own (:class:`bridge.daemon.heartbeat.Heartbeat`: a busy chore or lane never makes it look dead), and leaves at a
clean stop. A node without a heartbeat for :data:`DEAD_AFTER` seconds is dead: at its next beat,
any other node makes the dead node's claims due again, so a survivor delivers them at once
instead of after their leases. On one box (SQLite) the table holds the home's one node.

Heartbeats are written and judged by the store's clock (PostgreSQL's, read at each beat), so a
node whose clock is off is not taken for dead; due times and leases follow it too
(:func:`bridge.store.now`). Each beat records how far off the node's clock is, and a node more
than :data:`CLOCK_TOLERANCE` seconds off makes ``status`` degraded (run NTP: its logs and
attempt times are its own clock's).

Each start of a node is an instance of its own (:attr:`Node.instance`, in the row's ``owner``):
a heartbeat writes the row only while it is its own instance's, so when a node frozen past
:data:`DEAD_AFTER` (a paused VM) comes back to find another home started under its name, it
stops (:class:`NodeReplaced`) instead of running beside it as one node.

Claims carry the node in their owner, ``supervisor:<node>#<pid>``: a node's claims, whatever
run made them, are those whose owner starts with ``supervisor:<node>#`` (so ``#`` is not allowed
in a node name).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .. import conf, store
from ..errors import BridgeError, UsageError
from ..home import Home
from ..model import NodeState
from ..store import Store
from . import claims

log = logging.getLogger("ombridge.nodes")

HEARTBEAT_EVERY = 2.0  # seconds between two heartbeats of a running node
DEAD_AFTER = 10.0  # seconds without a heartbeat after which a node is dead
CLOCK_TOLERANCE = 5.0  # seconds a node's clock may be off the store's before status says so
OWNER_PREFIX = "supervisor:"  # what every supervisor's claims begin with
MAX_NAME = 200


@dataclass(frozen=True)
class Node:
    """This node: its name, where it runs, and the owner its claims carry. ``instance`` tells
    this start from every other, of this home or of another under the same name (pids repeat
    across hosts): the heartbeat writes the node's row only while the row is this instance's."""

    name: str
    host: str
    home: str
    pid: int
    instance: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def owner(self) -> str:
        """What this run's claims carry in ``claims.owner`` (and its row in ``nodes``)."""
        return f"{claim_prefix(self.name)}{self.pid}.{self.instance}"


class NodeReplaced(BridgeError):
    """Another home started under this node's name while this one was not heard from (a frozen
    VM, a long pause): two homes must not run as one node, so this one, the second to notice, stops."""


def claim_prefix(name: str) -> str:
    """The start of the owner of every claim node ``name`` made, in any of its runs."""
    return f"{OWNER_PREFIX}{name}#"


def clocks(conn: Any) -> tuple[float, float]:
    """(now by the store's clock, how many seconds this machine's clock is ahead of it): on
    SQLite this machine's clock and 0. (Due times and leases use :func:`bridge.store.now`, the
    connection's running measure of the same.)"""
    before = time.time()
    theirs = conn.dialect.clock(conn)
    if theirs is None:
        return before, 0.0
    return theirs, (before + time.time()) / 2 - theirs  # (half the round trip either side)


def check_name(name: str, where: str) -> str:
    """``name`` if it may name a node; otherwise one sentence saying why not."""
    if not name or len(name) > MAX_NAME or "#" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise UsageError(f"{where}: a node name is 1 to {MAX_NAME} characters, without '#' or control characters")
    return name


def this_node(home: Home, where: Store, pid: int | None = None) -> Node:
    """This home's node in the store ``where``: named by ``[store] node`` in ``conf/ombridge.conf``,
    else ``<hostname>:<home>``."""
    host = os.uname().nodename
    if where.configured_node:
        name = check_name(where.configured_node, f"{conf.path(home.root)}: [store] node")
    else:
        name = where.node
    return Node(name, host, str(home.root), os.getpid() if pid is None else pid)


def short_checksum(checksum: str | None) -> str:
    """A script's checksum as listings show it (12 digits), or what stands for none."""
    return checksum[:12] if checksum else "none loaded"


def script_checksum(path: os.PathLike[str] | str) -> str | None:
    """The sha256 of a node's ``OMBackSync.pl`` (None when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def join(conn: Any, me: Node, *, version: str, checksum: str | None, listener: str | None = None,
         reclaim_prefix: str | None = None) -> int:
    """Register ``me`` as running, and make due again what earlier runs of this node (or, with
    ``reclaim_prefix``, any owner starting with it) left claimed; returns how many claims.

    Refused when another home, alive, runs under the same name: two nodes must not share one.
    """
    with store.transaction(conn):
        at, offset = clocks(conn)
        row = conn.execute("SELECT host, home, pid, last_seen, stopped_at FROM nodes WHERE name = ?",
                           (me.name,)).fetchone()
        if row is not None and row[4] is None and at - row[3] < DEAD_AFTER and (row[0], row[1]) != (me.host, me.home):
            raise BridgeError(f"node {me.name!r} already runs on {row[0]} in {row[1]} (pid {row[2]}, seen "
                              f"{at - row[3]:.0f}s ago): give this home a name of its own ([store] node in "
                              f"{conf.CONF_FILE})")
        _running(conn, me, version, checksum, listener, at, offset)
    return claims.reclaim_abandoned(conn, reclaim_prefix or claim_prefix(me.name), me.owner)


def beat(conn: Any, me: Node, checksum: str | None) -> dict[str, int]:
    """One heartbeat of ``me``; then take over the claims of every node found dead.
    Returns {dead node: claims made due again} for those that held any."""
    at, offset = clocks(conn)
    with store.transaction(conn):
        if not conn.execute("UPDATE nodes SET last_seen = ?, script_checksum = ?, clock_offset = ? WHERE name = ? "
                            "AND owner = ?", (at, checksum, offset, me.name, me.owner)).rowcount:
            row = conn.execute("SELECT host, home, pid, started_at FROM nodes WHERE name = ?", (me.name,)).fetchone()
            if row is not None:
                raise NodeReplaced(
                    f"node {me.name!r} was started again on {row[0]} in {row[1]} (pid {row[2]}) "
                    f"{max(0.0, at - row[3]):.0f}s ago, while this one was not heard from (a paused machine?): two "
                    f"homes must not run as one node, so this one stops; give each home a name of its own "
                    f"([store] node in {conf.CONF_FILE})")
            _come_back(conn, me, checksum, at, offset)
    dead = [r[0] for r in conn.execute("SELECT name FROM nodes WHERE stopped_at IS NULL AND last_seen < ? "
                                       "AND name != ?", (at - DEAD_AFTER, me.name))]
    taken = {name: claims.reclaim_abandoned(conn, claim_prefix(name), me.owner) for name in dead}
    return {name: n for name, n in taken.items() if n}


def _running(conn: Any, me: Node, version: str, checksum: str | None, listener: str | None, at: float,
             offset: float) -> None:
    # ``me``'s row, as a node that started at ``at`` and runs (the one writer of a whole row).
    conn.execute(
        "INSERT INTO nodes (name, host, home, pid, owner, version, script_checksum, listener, started_at, "
        "last_seen, stopped_at, clock_offset) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?) ON CONFLICT (name) "
        "DO UPDATE SET host = excluded.host, home = excluded.home, pid = excluded.pid, owner = excluded.owner, "
        "version = excluded.version, script_checksum = excluded.script_checksum, listener = excluded.listener, "
        "started_at = excluded.started_at, last_seen = excluded.last_seen, stopped_at = NULL, "
        "clock_offset = excluded.clock_offset",
        (me.name, me.host, me.home, me.pid, me.owner, version, checksum, listener, at, at, offset))


def _come_back(conn: Any, me: Node, checksum: str | None, at: float, offset: float) -> None:
    # Forgotten while it ran (`nodes forget` after a pause longer than DEAD_AFTER): its row again,
    # so that status lists it and its claims are taken over should it die.
    from .. import __version__

    log.warning("node %s was forgotten while it ran: it is listed again", me.name)
    _running(conn, me, __version__, checksum, None, at, offset)


def leave(conn: Any, me: Node) -> None:
    """``me`` stopped cleanly: shown stopped, not dead (its claims were settled or given back)."""
    at, _ = clocks(conn)
    with store.transaction(conn):
        conn.execute("UPDATE nodes SET stopped_at = ?, last_seen = ? WHERE name = ? AND owner = ?",
                     (at, at, me.name, me.owner))


def forget(conn: Any, name: str) -> int:
    """Remove node ``name`` for good (a host gone), making every claim it still names due again;
    returns how many. Refused for a node that runs (it would join again at its next start).
    The removal itself is the check, so a node that beat or joined meanwhile is not removed."""
    with store.transaction(conn):
        at, _ = clocks(conn)
        gone = conn.execute("DELETE FROM nodes WHERE name = ? AND (stopped_at IS NOT NULL OR last_seen < ?) "
                            "RETURNING name", (name, at - DEAD_AFTER)).fetchall()
        if not gone:
            row = conn.execute("SELECT host, home, pid, last_seen FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is None and not _claims_by_node(conn).get(name):
                raise UsageError(f"no node is named {name!r} (`ombridge nodes list` shows them)")
            if row is not None:
                raise BridgeError(f"node {name!r} runs on {row[0]} in {row[1]} (pid {row[2]}, seen "
                                  f"{at - row[3]:.0f}s ago): stop it first (`ombridge stop` there)")
            # (not in the table, but claims name it: the orphans `check --db` reports)
        released = claims.end_owners(conn, claim_prefix(name), ended_too=True)
    log.info("node %s forgotten: %d of its claims are due again", name, released)
    return released


def listing(conn: Any) -> list[dict[str, Any]]:
    """Every node: name, host, home, pid, version, alive, state (running, dead, stopped), last
    seen (seconds ago), the claims it holds now, its script's checksum, and how far its clock was
    ahead of the store's at its last beat."""
    at, _ = clocks(conn)
    held = _claims_by_node(conn, at)  # (leases are in the store's clock: store.now)
    nodes = []
    for r in conn.execute("SELECT name, host, home, pid, version, script_checksum, listener, started_at, last_seen, "
                          "stopped_at, clock_offset FROM nodes ORDER BY name"):
        state = NodeState.STOPPED if r[9] is not None else NodeState.RUNNING if at - r[8] < DEAD_AFTER else NodeState.DEAD
        nodes.append({"name": r[0], "host": r[1], "home": r[2], "pid": r[3], "version": r[4], "state": state.value,
                      "alive": state is NodeState.RUNNING, "last_seen": r[8], "seen_ago": max(0.0, at - r[8]),
                      "leases": held.get(r[0], 0), "script_checksum": r[5], "listener": r[6], "started_at": r[7],
                      "clock_offset": r[10]})
    return nodes


def troubles(nodes: list[dict[str, Any]]) -> list[str]:
    """Why the nodes make the whole degraded, in words: dead nodes, scripts that differ."""
    found = [f"node {n['name']} is dead: no heartbeat for {n['seen_ago']:.0f}s (its claims are taken over)"
             for n in nodes if n["state"] == NodeState.DEAD.value]
    running = [n for n in nodes if n["alive"]]
    found += [f"node {n['name']}'s clock is {abs(n['clock_offset']):.1f}s {'ahead of' if n['clock_offset'] > 0 else 'behind'} "
              "the database's: run NTP there (due times and leases follow the database's clock, its logs and "
              "attempt times do not)"
              for n in running if abs(n["clock_offset"] or 0.0) > CLOCK_TOLERANCE]
    loaded = [n for n in running if n["script_checksum"]]
    if len({n["script_checksum"] for n in loaded}) > 1:
        found.append("the nodes run different OMBackSync.pl: " + ", ".join(
            f"{n['name']} {short_checksum(n['script_checksum'])}" for n in loaded))
    return found


def audit(conn: Any) -> list[str]:
    """Claims that name a node the ``nodes`` table does not know (``check --db``): nobody would
    ever take them over; their leases are the only way back."""
    known = {r[0] for r in conn.execute("SELECT name FROM nodes")}
    named = _claims_by_node(conn)
    return [f"{count} open claim(s) name node {name!r}, which is not in the nodes table (they come back when "
            f"their leases end, or at once with `ombridge nodes forget {name}`)"
            for name, count in sorted(named.items()) if name not in known]


def _claims_by_node(conn: Any, leased_at: float | None = None) -> dict[str, int]:
    """{node: open claims it made} (with ``leased_at``, only those whose lease runs past it)."""
    found: dict[str, int] = {}
    for owner, count in claims.by_owner(conn, leased_at).items():
        if owner.startswith(OWNER_PREFIX) and "#" in owner:
            name = owner[len(OWNER_PREFIX):].rsplit("#", 1)[0]
            found[name] = found.get(name, 0) + count
    return found

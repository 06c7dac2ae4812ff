"""The SQLite event core's schema: its migrations, in order, applied with sqlite-utils (imported
only when a migration is due, so that ``ombridge send`` stays light) under a lock file, and
``PRAGMA user_version`` saying how many ran. The PostgreSQL twin is :mod:`bridge.store.pgschema`; the
tables are described for operators in docs/store.md.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is not imported at run time: `ombridge send` starts faster
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

from ..model import ActionKind, DeliveryStatus, Lane


def _v1(db: Any) -> None:
    db["topics"].create(
        {"name": str, "description": str, "key_fields": str, "created_at": float},
        pk="name", not_null={"key_fields", "created_at"}, defaults={"description": ""}, if_not_exists=True,
    )
    db["subscribers"].create(
        {"id": int, "description": str, "system": int, "disabled": int, "action": str, "target": str,
         "timeout": float, "retries": int, "created_at": float},
        pk="id", not_null={"action", "system", "disabled", "timeout", "retries", "created_at"},
        defaults={"description": "", "system": 0, "disabled": 0, "target": ""}, if_not_exists=True,
    )
    db["subscriber_topics"].create(
        {"id": int, "subscriber_id": int, "pattern": str, "synchronized": int, "description": str},
        pk="id", foreign_keys=[("subscriber_id", "subscribers", "id")],
        not_null={"subscriber_id", "pattern", "synchronized"}, defaults={"synchronized": 0, "description": ""},
        if_not_exists=True,
    )
    db["event_filters"].create(
        {"id": int, "subscriber_topic_id": int, "variable": str, "regex": str, "description": str},
        pk="id", foreign_keys=[("subscriber_topic_id", "subscriber_topics", "id")],
        not_null={"subscriber_topic_id", "variable", "regex"}, defaults={"description": ""}, if_not_exists=True,
    )
    db["events"].create(
        {"id": int, "topic": str, "key": str, "forced": int, "parent_id": int, "depth": int, "created_at": float},
        pk="id", not_null={"topic", "key", "forced", "depth", "created_at"}, defaults={"forced": 0, "depth": 0},
        if_not_exists=True,
    )
    db["subscriber_events"].create(
        {"id": int, "event_id": int, "subscriber_id": int, "subscriber_topic_id": int, "synchronized": int,
         "status": str, "attempts": int, "next_attempt_at": float, "last_error": str,
         "created_at": float, "updated_at": float},
        pk="id", foreign_keys=[("event_id", "events", "id"), ("subscriber_id", "subscribers", "id")],
        not_null={"event_id", "subscriber_id", "status", "attempts", "next_attempt_at", "created_at", "updated_at"},
        defaults={"status": DeliveryStatus.OPEN.value, "attempts": 0, "synchronized": 0}, if_not_exists=True,
    )
    db["attempts"].create(
        {"id": int, "subscriber_event_id": int, "number": int, "started_at": float, "ended_at": float,
         "ok": int, "exit_status": int, "output": str, "error": str},
        pk="id", foreign_keys=[("subscriber_event_id", "subscriber_events", "id")],
        not_null={"subscriber_event_id", "number", "started_at", "ended_at", "ok"}, if_not_exists=True,
    )
    # The claim query: due open deliveries, oldest due first (see bridge/eventcore/deliveries.py).
    db["subscriber_events"].create_index(["status", "next_attempt_at", "id"], if_not_exists=True,
                                         index_name="subscriber_events_due")
    db["subscriber_events"].create_index(["event_id"], if_not_exists=True)
    db["subscriber_events"].create_index(["subscriber_id", "status"], if_not_exists=True)
    db["subscriber_topics"].create_index(["pattern"], if_not_exists=True)
    db["subscriber_topics"].create_index(["subscriber_id", "pattern"], unique=True, if_not_exists=True)
    db["event_filters"].create_index(["subscriber_topic_id", "variable"], unique=True, if_not_exists=True)
    db["events"].create_index(["topic", "id"], if_not_exists=True)
    db["attempts"].create_index(["subscriber_event_id", "number"], if_not_exists=True)


def _v2(db: Any) -> None:
    # Who holds a claim ("supervisor:<pid>" or "send:<pid>"): a supervisor that starts (one per
    # home) takes back at once what a dead supervisor had claimed, instead of waiting out leases.
    if "claimed_by" not in db["subscriber_events"].columns_dict:
        db["subscriber_events"].add_column("claimed_by", str)


def _v3(db: Any) -> None:
    # Context variables (the seed's table substitution variables): declared per topic pattern,
    # looked up when an event is sent, stored with the event so filters and actions agree.
    db["contexts"].create(
        {"id": int, "pattern": str, "table_name": str, "db_path": str, "matches": str, "created_at": float},
        pk="id", not_null={"pattern", "table_name", "matches", "created_at"}, if_not_exists=True,
    )
    db["contexts"].create_index(["pattern"], if_not_exists=True)
    if "context" not in db["events"].columns_dict:
        db["events"].add_column("context", str)


def _v4(db: Any) -> None:
    # Users of the HTTP listener (bridge/web/users.py): a name and a scrypt hash, never a password.
    db["users"].create({"name": str, "hash": str, "created_at": float, "updated_at": float},
                       pk="name", not_null={"hash", "created_at", "updated_at"}, if_not_exists=True)


def _v5(db: Any) -> None:
    # Each delivery names its lane, and the claim query's index starts with it: a lane never
    # walks past the other lane's backlog (100,000 Closes waiting made every wake of an action
    # lane scan them all). Existing rows get their lane from their subscriber's action.
    if "lane" not in db["subscriber_events"].columns_dict:
        db["subscriber_events"].add_column("lane", str, not_null_default=Lane.ACTIONS.value)
    db.execute("UPDATE subscriber_events SET lane = ? WHERE subscriber_id IN "
               "(SELECT id FROM subscribers WHERE action = ?)", [Lane.BACKSYNC.value, ActionKind.BACKSYNC.value])
    db["subscriber_events"].create_index(["lane", "status", "next_attempt_at", "id"], if_not_exists=True,
                                         index_name="subscriber_events_lane_due")
    db.execute("DROP INDEX IF EXISTS subscriber_events_due")


def _v6(db: Any) -> None:
    # Headers a web subscriber sends, e.g. Authorization (JSON object): the credentials that are
    # refused in URLs live here, in the owner-only event core, and no listing ever shows them.
    if "secret_headers" not in db["subscribers"].columns_dict:
        db["subscribers"].add_column("secret_headers", str)


def _v7(db: Any) -> None:
    # The claim index holds open deliveries only: it stays as small as the backlog however many
    # finished rows pile up, and finishing a delivery takes its entry out instead of moving it
    # (docs/decisions.md, "The burst"). Finished rows get an
    # index of their own (the console's chart reads them by when they finished), failed ones a
    # tiny one.
    open_, failed = DeliveryStatus.OPEN.value, DeliveryStatus.FAILED.value
    db.execute("DROP INDEX IF EXISTS subscriber_events_lane_due")
    db.execute("CREATE INDEX IF NOT EXISTS subscriber_events_open ON subscriber_events (lane, next_attempt_at, id) "
               f"WHERE status = '{open_}'")
    db.execute("CREATE INDEX IF NOT EXISTS subscriber_events_ended ON subscriber_events (next_attempt_at) "
               f"WHERE status != '{open_}'")
    db.execute("CREATE INDEX IF NOT EXISTS subscriber_events_failed ON subscriber_events (subscriber_id) "
               f"WHERE status = '{failed}'")


def _v8(db: Any) -> None:
    # OMi's event ids behind each external id ombridge answered (docs/omi.md): a re-sent event is
    # stored once, and a sync back reaches every OMi event of an external id. Not a foreign key of
    # events: retention prunes old events, the mapping must outlive them.
    db.execute("CREATE TABLE IF NOT EXISTS omi_events (omi_id TEXT PRIMARY KEY, external_id TEXT NOT NULL, "
               "event_id INTEGER, received_at REAL NOT NULL, closed_back_at REAL)")
    db.execute("CREATE INDEX IF NOT EXISTS omi_events_external ON omi_events (external_id)")


def _v9(db: Any) -> None:
    # The nodes sharing the event core (bridge/eventcore/nodes.py): on SQLite, the home's one node, so that
    # status and claims read the same on both stores (PostgreSQL: 0001_event_core.sql).
    db.execute("CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, host TEXT NOT NULL, home TEXT NOT NULL, "
               "pid INTEGER NOT NULL, owner TEXT NOT NULL, version TEXT NOT NULL, script_checksum TEXT, listener TEXT, "
               "started_at REAL NOT NULL, last_seen REAL NOT NULL, stopped_at REAL)")
    db.execute("CREATE INDEX IF NOT EXISTS nodes_last_seen ON nodes (last_seen)")


def _v10(db: Any) -> None:
    # Console sessions (bridge/web/console/session.py), as on PostgreSQL: any node knows them, and
    # they outlive a restart. The id is the sha256 of the cookie's session id, never the id.
    db.execute("CREATE TABLE IF NOT EXISTS console_sessions (id TEXT PRIMARY KEY, user_name TEXT NOT NULL "
               "REFERENCES users (name) ON DELETE CASCADE, created_at REAL NOT NULL, expires_at REAL NOT NULL, "
               "ended_at REAL)")
    db.execute("CREATE INDEX IF NOT EXISTS console_sessions_expires_at ON console_sessions (expires_at)")


def _v11(db: Any) -> None:
    # A node's clock against the store's (bridge/eventcore/nodes.py; PostgreSQL: 0003_node_clock.sql). On
    # SQLite the one box's clock is the store's: always 0.
    if "clock_offset" not in [r[1] for r in db.execute("PRAGMA table_info(nodes)")]:
        db.execute("ALTER TABLE nodes ADD COLUMN clock_offset REAL")


# The tables whose ids are shown (delivery 13, subscriber 4, attempt 92): AUTOINCREMENT from v12.
ID_TABLES = ("subscribers", "subscriber_topics", "event_filters", "events", "subscriber_events", "attempts",
             "contexts")


def _v12(db: Any) -> None:
    # Ids never come back: without AUTOINCREMENT SQLite hands out max(id) + 1, so the subscriber
    # added after one was removed got its id, and its deliveries and attempts got those of the
    # removed one's: two different "delivery 13" in one log. SQLite cannot add AUTOINCREMENT to
    # a table, so each is rebuilt as its documented procedure says (foreign keys off, a new table,
    # the rows copied with their ids, the old one dropped, the new one renamed, its indexes made
    # again), all in one transaction. sqlite_sequence starts at each table's largest id: the ids
    # of rows deleted before this migration cannot be known any more.
    conn = db.conn
    conn.execute("PRAGMA foreign_keys = OFF")  # (a no-op inside a transaction: set before it)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in ID_TABLES:
                _autoincrement(conn, table)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _autoincrement(conn: Any, table: str) -> None:
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    if "AUTOINCREMENT" in sql.upper():
        return  # (rebuilt already)
    head = sql.index("(")
    body = sql[head:].replace('"id" INTEGER PRIMARY KEY,', '"id" INTEGER PRIMARY KEY AUTOINCREMENT,', 1)
    body = body.replace("[id] INTEGER PRIMARY KEY,", "[id] INTEGER PRIMARY KEY AUTOINCREMENT,", 1)
    if "AUTOINCREMENT" not in body:
        raise RuntimeError(f"cannot find the id column of {table} in: {sql}")
    indexes = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                                          "AND sql IS NOT NULL", (table,))]
    conn.execute(f'CREATE TABLE "{table}_v12" {body}')
    conn.execute(f'INSERT INTO "{table}_v12" SELECT * FROM "{table}"')
    conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f'ALTER TABLE "{table}_v12" RENAME TO "{table}"')
    for index in indexes:
        conn.execute(index)


def _v13(db: Any) -> None:
    # The sync back to OMi has a lane of its own (issue 31): a gateway that answers late holds
    # no lane of the command, program and web subscribers. Its open deliveries move there.
    db.execute("UPDATE subscriber_events SET lane = ? WHERE lane = ? AND subscriber_id IN "
               "(SELECT id FROM subscribers WHERE action = ?)", [Lane.OMI.value, Lane.ACTIONS.value, ActionKind.OMI.value])


def _v14(db: Any) -> None:
    # Paused subscribers (bridge/eventcore/pauses.py; PostgreSQL: 0014_subscriber_pauses.sql): a row
    # while a subscriber is paused. The claims skip its deliveries, which stay open in their place.
    db.execute("CREATE TABLE IF NOT EXISTS subscriber_pauses (subscriber_id INTEGER PRIMARY KEY "
               "REFERENCES subscribers (id), paused_at REAL NOT NULL, paused_by TEXT NOT NULL)")


def _v15(db: Any) -> None:
    # A subscriber's deliveries newest first, a page at a time (the console's deliveries of one
    # subscriber, keyset paging): without it the listing sorted every row of the subscriber
    # (PostgreSQL: 0015_console_indexes.sql).
    db.execute("CREATE INDEX IF NOT EXISTS subscriber_events_subscriber ON subscriber_events (subscriber_id, id)")


def _v16(db: Any) -> None:
    # Claims in a table of their own (bridge/eventcore/claims.py; PostgreSQL: 0016_queue_writes.sql): the
    # queue row is written when sent and when finished, no more. A claim held now moves there as it
    # was (its attempt counted, its owner, its lease); its row is due again at its own turn (when it
    # was created: the claim had moved its due time to the lease's end) and counts one attempt
    # less, the claim's own being in the claim. Then claimed_by goes.
    if "claimed_by" not in db["subscriber_events"].columns_dict:
        return  # (done already)
    open_ = DeliveryStatus.OPEN.value
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS claims (delivery_id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL, "
                     "owner TEXT, lease_until REAL NOT NULL)")
        conn.execute("INSERT OR REPLACE INTO claims (delivery_id, attempt, owner, lease_until) SELECT id, attempts, "
                     f"claimed_by, next_attempt_at FROM subscriber_events WHERE status = '{open_}' "
                     "AND claimed_by IS NOT NULL AND attempts > 0")
        conn.execute("UPDATE subscriber_events SET attempts = attempts - 1, next_attempt_at = created_at "
                     f"WHERE status = '{open_}' AND claimed_by IS NOT NULL AND attempts > 0")
        conn.execute("ALTER TABLE subscriber_events DROP COLUMN claimed_by")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


MIGRATIONS: list[Callable[[Any], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10, _v11, _v12, _v13, _v14,
                                          _v15, _v16]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(datafiles: str, conn: Any) -> None:
    """Bring the SQLite event core of ``conn`` (in ``datafiles``) to :data:`SCHEMA_VERSION`."""
    import fcntl

    import sqlite_utils

    lock_path = os.path.join(datafiles, ".migrate.lock")
    with open(lock_path, "a") as lock:
        os.chmod(lock_path, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)  # one migrator at a time; the others wait, then see it done
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.execute("PRAGMA journal_mode = WAL")
        db = sqlite_utils.Database(conn)
        for number in range(version, SCHEMA_VERSION):
            MIGRATIONS[number](db)  # each step is idempotent: an interrupted one re-runs cleanly
            conn.execute(f"PRAGMA user_version = {number + 1}")

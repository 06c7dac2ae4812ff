-- How far each node's clock was ahead of the database's at its last heartbeat (seconds; SQLite:
-- store migration 11). Heartbeats and deaths are judged by the database's clock; leases and
-- retries by each node's, so `status` calls a node whose clock is off degraded (bridge/nodes.py).
ALTER TABLE nodes ADD COLUMN clock_offset double precision;

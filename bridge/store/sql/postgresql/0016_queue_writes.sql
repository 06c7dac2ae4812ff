-- Claims in a table of their own (SQLite: store migration 16; bridge/eventcore/claims.py,
-- docs/store.md "claims"): the queue row is inserted when its event is sent and updated once, with
-- the outcome. Each claim used to update it as well, and since the claim changed indexed columns
-- (next_attempt_at, claimed_by) that update wrote a new row version and an entry in every index
-- of subscriber_events. A claim is now one small row here, made again by the next claim of the
-- same delivery: attempt is the attempt the latest claim counted (the fencing token), and it
-- holds while its attempt is above the queue row's attempts and its lease has not run out.
-- No foreign key: checking one would lock the queue row the claim is meant to leave alone
-- (retention deletes a delivery's claim with it).
CREATE TABLE claims (
    delivery_id bigint PRIMARY KEY,       -- subscriber_events.id
    attempt     integer NOT NULL,         -- the attempt the latest claim counted
    owner       text,                     -- supervisor:<node>#<pid>.<instance> or send:<pid>; NULL: given back
    lease_until double precision NOT NULL -- the claim holds until then (0: given back)
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

-- A claim held now moves here as it was; its delivery is due again at its own turn (when it was
-- created: the claim had moved its due time to the lease's end) and counts one attempt less,
-- the claim's own being in the claim.
INSERT INTO claims (delivery_id, attempt, owner, lease_until)
    SELECT id, attempts, claimed_by, next_attempt_at FROM subscriber_events
    WHERE status = 'open' AND claimed_by IS NOT NULL AND attempts > 0;
UPDATE subscriber_events SET attempts = attempts - 1, next_attempt_at = created_at
    WHERE status = 'open' AND claimed_by IS NOT NULL AND attempts > 0;
DROP INDEX subscriber_events_claimed;
ALTER TABLE subscriber_events DROP COLUMN claimed_by;

-- Two references the queue's one writer (bridge/eventcore/deliveries.py) keeps by construction
-- are no longer checked row by row: a delivery is inserted in the same transaction as its
-- event, and an attempt only for a delivery whose row it has just updated or found. PostgreSQL
-- checks a foreign key with a trigger per inserted row (a query and a row lock each): 11% of a
-- burst's closes per second went there. SQLite's lanes already write without foreign key checks
-- (bridge/store/sqlitestore.py), and its other connections' checks are one index probe; its
-- schema keeps the declarations (dropping one there rebuilds the table). `ombridge check --db`
-- looks for rows these would have refused. A delivery still references its subscriber: a
-- subscriber removed on one node while another node's send matched it must fail that send.
ALTER TABLE subscriber_events DROP CONSTRAINT subscriber_events_event_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_subscriber_event_id_fkey;

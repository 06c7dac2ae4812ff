-- Paused subscribers (SQLite: store migration 14; bridge/eventcore/pauses.py, docs/operations.md,
-- "Pause or disable"): a row while a subscriber is paused, with since when and by whom. The claims
-- of every node skip a paused subscriber's deliveries, which stay open and keep their place in the
-- queue; resuming deletes the row.
CREATE TABLE subscriber_pauses (
    subscriber_id bigint PRIMARY KEY REFERENCES subscribers (id),
    paused_at     double precision NOT NULL,
    paused_by     text NOT NULL
);

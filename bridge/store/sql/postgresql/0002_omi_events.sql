-- OMi's event ids behind each external id ombridge answered (SQLite: store migration 8,
-- docs/omi.md): a re-sent event is stored once, and a sync back reaches every OMi event of an
-- external id. Not a foreign key of events: retention prunes old events, the mapping outlives them.
CREATE TABLE omi_events (
    omi_id         text PRIMARY KEY,
    external_id    text NOT NULL,
    event_id       bigint,
    received_at    double precision NOT NULL,
    closed_back_at double precision
);
CREATE INDEX omi_events_external ON omi_events (external_id);

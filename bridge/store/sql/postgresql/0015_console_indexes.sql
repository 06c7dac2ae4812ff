-- A subscriber's deliveries newest first, a page at a time (the console's deliveries of one
-- subscriber, keyset paging: WHERE subscriber_id = ? [AND id < ?] ORDER BY id DESC LIMIT n):
-- without it the listing sorted every row of the subscriber. SQLite: sqlschema's step 15.
CREATE INDEX subscriber_events_subscriber ON subscriber_events (subscriber_id, id);

"""The deliveries as operators see them, for tests that read the queue's tables straight: each
row of ``subscriber_events`` with its claim's part (attempts counted, who holds it, when it is
next due: bridge.eventcore.claims.VIEW). ``FROM {DELIVERIES}`` in a test's SQL."""

from bridge.eventcore import claims

DELIVERIES = (f"(SELECT se.id, se.event_id, se.subscriber_id, se.lane, se.status, {claims.VIEW}, se.last_error, "
              f"se.created_at, se.updated_at FROM subscriber_events se {claims.JOIN}) AS d")

"""Delivery: actions, sending, the backsync system subscriber, the Event Manager's lanes."""

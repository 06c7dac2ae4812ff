"""The event core: its tables, each with one writer (topics and subscribers, events, the queue, nodes...)."""

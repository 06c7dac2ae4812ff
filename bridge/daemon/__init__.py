"""The daemon: the supervisor and its threads (control server, chores, reporter, metrics, wake-ups)."""

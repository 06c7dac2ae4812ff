"""ombridge: run OMBackSync.pl scripts unchanged in a persistent perl child, fed by a durable event core."""

__version__ = "0.1.0"

"""The whole ``ombridge`` command line: the root group with every command registered."""

from __future__ import annotations

from . import backsync, events, omi, operate, pausing, stores, supervise, users  # noqa: F401  (each registers its commands)
from .base import main

__all__ = ["main"]

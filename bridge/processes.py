"""Process groups: what ombridge starts (an action, the perl child) runs in a group of its own,
so that everything it started goes with it."""

from __future__ import annotations

import os
import signal


def kill_group(pgid: int) -> None:
    """Kill process group ``pgid`` at once (SIGKILL); one already gone is no error."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

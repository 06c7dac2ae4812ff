"""What a child prints, into the log: near pipe speed, whole lines, within a byte budget.

The perl child's STDOUT and STDERR share one pipe. A script with debug output switched on may
print megabytes in one call; a reader that logs a line at a time slows the child down to the
logger's pace (566x slower than perl printing into ``cat``, measured), and a flood would rotate
the useful log away in seconds. So the pump:

- reads in big chunks (and asks the kernel for a 1 MiB pipe), so the child rarely waits;
- logs whole lines, one record each, with the child's pid (a line longer than
  :data:`MAX_LINE` bytes is cut and says how much was cut);
- logs at most ``budget`` bytes per ``window`` seconds; past that, lines are only counted, and one
  WARNING line says how many lines and bytes were not logged, once the window is over (or the
  output ends). Logging what fits costs a bounded amount of time per window, reading the rest
  costs about what ``cat`` costs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20  # the default maximum of /proc/sys/fs/pipe-max-size
MAX_LINE = 4000  # bytes of one line that are logged
BUDGET = 64 << 10  # bytes logged per window
WINDOW = 1.0  # seconds


class LineLogger:
    """Turns chunks of output into log records: whole lines, a byte budget per time window.

    Feed it with :meth:`feed`, call :meth:`idle` when no output came for a while and
    :meth:`finish` at the end of the output. Not thread-safe: one reader feeds it.
    """

    def __init__(self, logger: logging.Logger, label: str, *, budget: int = BUDGET, window: float = WINDOW,
                 max_line: int = MAX_LINE, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.label = label
        self.budget = budget
        self.window = window
        self.max_line = max_line
        self.clock = clock
        self._partial = bytearray()  # the start of a line whose end has not arrived yet
        self._cut = 0  # bytes of the current line beyond max_line, not kept
        self._window_start = clock()
        self._logged = 0  # bytes logged in the current window
        self._skipped_lines = 0  # lines not logged since the last note
        self._skipped_bytes = 0
        self.total_bytes = 0

    def feed(self, data: bytes) -> None:
        """Take the next chunk of output."""
        self.total_bytes += len(data)
        self._roll_window()
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            if self._logged >= self.budget and not self._partial and not self._cut:
                # Over budget: count the remaining whole lines of this chunk without looking at them.
                last = data.rfind(b"\n") + 1
                self._skipped_lines += data.count(b"\n", start, last)
                self._skipped_bytes += last - start
                start = last
                break
            self._line(data[start:end])
            start = end + 1
            end = data.find(b"\n", start)
        self._keep(data[start:])

    def idle(self) -> None:
        """No output came for a while: write the note of a finished window now, not at the next line."""
        self._roll_window()

    def finish(self) -> None:
        """The output ended: log an unterminated last line and any pending note."""
        if self._partial or self._cut:
            self._line(b"")
        self._note()

    def seconds_to_note(self) -> float | None:
        """How long until a pending note is due (None when nothing was skipped)."""
        if not self._skipped_lines:
            return None
        return max(0.0, self._window_start + self.window - self.clock())

    def _keep(self, rest: bytes) -> None:
        room = self.max_line - len(self._partial)
        if len(rest) > room:
            self._cut += len(rest) - max(room, 0)
            rest = rest[:max(room, 0)]
        self._partial += rest

    def _line(self, tail: bytes) -> None:
        if self._partial or self._cut:
            self._keep(tail)
            line, cut = bytes(self._partial), self._cut
            self._partial.clear()
            self._cut = 0
        else:
            line, cut = tail[:self.max_line], max(0, len(tail) - self.max_line)
        size = len(line) + cut + 1
        if self._logged >= self.budget:
            self._skipped_lines += 1
            self._skipped_bytes += size
            return
        self._logged += size
        text = line.rstrip(b"\r").decode("utf-8", "backslashreplace")
        if cut:
            text += f" [... {cut} more bytes of this line not logged]"
        self.logger.info("%s: %s", self.label, text)

    def _roll_window(self) -> None:
        now = self.clock()
        if now - self._window_start >= self.window:
            self._note()
            self._window_start = now
            self._logged = 0

    def _note(self) -> None:
        if self._skipped_lines:
            self.logger.warning("%s: %d lines (%d bytes) not logged: output above %d bytes per %gs",
                                self.label, self._skipped_lines, self._skipped_bytes, self.budget, self.window)
            self._skipped_lines = self._skipped_bytes = 0


def pump(stream: BinaryIO, lines: LineLogger) -> None:
    """Read ``stream`` until end of file into ``lines``; closes ``stream``."""
    fd = stream.fileno()
    with stream:
        while True:
            wait = lines.seconds_to_note()
            if wait is not None and not select.select([fd], [], [], wait)[0]:
                lines.idle()
                continue
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                break
            lines.feed(chunk)
        lines.finish()


def start(stream: BinaryIO, logger: logging.Logger, label: str, **options: Any) -> threading.Thread:
    """Pump ``stream`` (a pipe's read end, which the pump then owns and closes) into the log, in a daemon thread."""
    try:
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError):  # not Linux, or above the system's limit: the default will do
        pass
    thread = threading.Thread(target=pump, args=(stream, LineLogger(logger, label, **options)),
                              daemon=True, name=f"{label}-out")
    thread.start()
    return thread

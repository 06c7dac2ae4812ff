"""What a child prints, into the log: near pipe speed, whole lines, within a byte budget; and,
for the perl host, each call's own output tail.

The perl child's STDOUT and STDERR share one pipe. A script with debug output switched on may
print megabytes in one call; a reader that logs a line at a time slows the child down to the
logger's pace (566x slower than perl printing into ``cat``, measured), and a flood would rotate
the useful log away in seconds. So the reader:

- reads in big chunks (and asks the kernel for a 1 MiB pipe), so the child rarely waits;
- logs whole lines, one record each, with the child's pid (a line longer than
  :data:`MAX_LINE` bytes is cut and says how much was cut);
- logs at most ``budget`` bytes per ``window`` seconds; past that, lines are only counted, and one
  WARNING line says how many lines and bytes were not logged, once the window is over (or the
  output ends). Logging what fits costs a bounded amount of time per window, reading the rest
  costs about what ``cat`` costs;
- splits the stream at the host's end-of-call marks (``\\0<32 hex digits>\\0``, written on the
  pipe after each call, just before its reply: ``perl/ombridge_host.pl``) and keeps the last
  :data:`~bridge.model.OUTPUT_TAIL` bytes between two marks as that call's tail, whatever the
  budget dropped. The marks themselves never reach the log.

Text is read by one rule, for the log and the tails alike (:func:`bridge.outputtext.text_of`):
UTF-8 where the bytes are valid UTF-8, each other byte as Latin-1 (ISO-8859-1), the charset of
the European scripts of the connector's age: ``St\\xf6rung`` reads "Störung" in both.
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

from ..model import OUTPUT_TAIL
from ..outputtext import text_of

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20  # the default maximum of /proc/sys/fs/pipe-max-size
MAX_LINE = 4000  # bytes of one line that are logged
BUDGET = 64 << 10  # bytes logged per window
WINDOW = 1.0  # seconds
SMALL_READ = 64 << 10  # after a read smaller than this the reader naps, to let output pile up
NAPS = (0.001, 0.02)  # seconds: the first nap after a big read or a quiet spell, and the longest
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
        text = text_of(line.rstrip(b"\r"))
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


class OutputReader:
    """Reads a child's output pipe in a thread of its own: into the log (a :class:`LineLogger`)
    and, when ``mark`` is given, split at the marks into one tail per call.

    The thread and the caller share one lock; whoever holds it reads, feeds the log and splits,
    so bytes are taken in order whoever reads them. :meth:`take_calls` is called for the replies
    in order: the host wrote each call's mark before its reply, so the marks are in the pipe (or
    were read) by then, and reading what the pipe holds finds them, without waiting for the
    thread. Calls that printed nothing (most of them) cost a counter, not a tail each.
    """

    def __init__(self, stream: BinaryIO, logger: logging.Logger, label: str, mark: bytes | None = None,
                 **options: Any) -> None:
        try:
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except (AttributeError, OSError):  # not Linux, or above the system's limit: the default will do
            pass
        self._stream = stream
        self._fd = stream.fileno()
        os.set_blocking(self._fd, False)
        self._lines = LineLogger(logger, label, **options)
        self._mark = mark
        self._lock = threading.Lock()
        self._closed = False  # the output ended and the pipe is closed
        self._held = b""  # the end of the last read, when it may be the start of a mark
        self._tail = bytearray()  # the last bytes of the call in progress
        self._size = 0  # bytes the call in progress printed
        self._calls = 0  # calls whose mark came
        self._taken = 0  # calls whose tail was taken
        self._tails: dict[int, tuple[bytes, bool]] = {}  # call -> (tail, cut), for calls that printed
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"{label}-out")
        self.thread.start()

    def take_calls(self, count: int) -> list[str]:
        """The tails of the next ``count`` calls, in order ("" for a call that printed nothing, or
        whose mark never came: the capture is off, or a stand-in host writes none)."""
        if self._mark is None:
            return [""] * count
        with self._lock:
            while self._calls - self._taken < count and self._read():  # the marks are in the pipe
                pass
            first, self._taken = self._taken, min(self._taken + count, self._calls)
            if not self._tails:
                return [""] * count
            ended = [self._tails.pop(n, None) for n in range(first, self._taken)]
        texts = [text_of(*tail) if tail else "" for tail in ended]
        return texts + [""] * (count - len(texts))

    def take_leftover(self) -> str:
        """Once the host has ended: the tail of the call it did not finish (what came after the
        last mark, read up to what the pipe holds now). Later output starts a new tail."""
        if self._mark is None:
            return ""
        with self._lock:
            self._read(until_empty=True)
            self._feed(self._held)
            self._held = b""
            leftover = bytes(self._tail), self._size > OUTPUT_TAIL
            self._tail.clear()
            self._size = 0
            self._tails.clear()
            self._taken = self._calls
        return text_of(*leftover)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the end of the output (every writer closed the pipe)."""
        self.thread.join(timeout)

    def _run(self) -> None:
        nap = NAPS[0]
        while True:
            # A note falls due a window after lines were dropped; when the caller's take_calls
            # read them (and emptied the pipe) while this thread waited in select, this thread
            # never saw them: it looks again at least once a window, or the note would wait for
            # the script's next output, however long that is.
            wait = self._lines.seconds_to_note()
            wait = self._lines.window if wait is None else wait
            began = time.monotonic()
            if not select.select([self._fd], [], [], wait)[0]:
                with self._lock:
                    self._lines.idle()
                continue
            with self._lock:
                size = self._read()
            if size is None:
                break
            if size >= SMALL_READ or time.monotonic() - began > NAPS[1]:
                nap = NAPS[0]  # a flood (read on at once) or the first output after a quiet spell
            else:
                # Little came, again: let more pile up, so that a burst of calls costs one read
                # per nap, not one wake-up per mark (take_calls usually gets there first). The
                # naps double up to 20 ms: each wake-up costs the perl host's mark a few µs.
                time.sleep(nap)
                nap = min(nap * 2, NAPS[1])
        with self._lock:
            self._feed(self._held)
            self._held = b""
            self._lines.finish()
            self._closed = True
            self._stream.close()

    def _read(self, until_empty: bool = False) -> int | None:
        # Under the lock: one read (or, with until_empty, every read until the pipe is empty) into
        # the log and the tails; the bytes read, None at the end of the output.
        total = 0
        while not self._closed:
            try:
                # Into a buffer of our own: os.read(fd, 1 MiB) allocates (and maps) a megabyte
                # for every read, most of the cost of reading a few marks.
                size = os.readv(self._fd, [self._buffer])
            except BlockingIOError:
                return total
            if not size:
                return None
            chunk = self._view[:size].tobytes()
            total += len(chunk)
            self._take(chunk)
            if not until_empty:
                return total
        return None

    def _take(self, chunk: bytes) -> None:
        mark = self._mark
        if mark is None:
            self._lines.feed(chunk)
            return
        data = self._held + chunk if self._held else chunk
        parts = data.split(mark)
        if len(parts) > 1:
            self._feed(parts[0])
            self._end_call()
            if len(parts[0]) + len(parts[-1]) + (len(parts) - 1) * len(mark) == len(data):
                self._calls += len(parts) - 2  # every call in between printed nothing: the usual case
            else:
                for part in parts[1:-1]:
                    self._feed(part)
                    self._end_call()
        rest = parts[-1]
        keep = _mark_start(rest, mark)
        self._feed(rest[:len(rest) - keep] if keep else rest)
        self._held = rest[len(rest) - keep:] if keep else b""

    def _end_call(self) -> None:
        # The call in progress ended (its mark came): keep its tail if it printed anything.
        if self._size:
            self._tails[self._calls] = (bytes(self._tail), self._size > OUTPUT_TAIL)
            self._tail.clear()
            self._size = 0
        self._calls += 1

    def _feed(self, piece: bytes) -> None:
        if not piece:
            return
        self._lines.feed(piece)
        self._size += len(piece)
        if len(piece) >= OUTPUT_TAIL:
            self._tail[:] = piece[-OUTPUT_TAIL:]
            return
        self._tail += piece
        if len(self._tail) > OUTPUT_TAIL:
            del self._tail[:-OUTPUT_TAIL]


def _mark_start(data: bytes, mark: bytes) -> int:
    """How many bytes at the end of ``data`` may be the beginning of a ``mark`` whose rest has not
    been read yet."""
    at = data.find(mark[:1], max(0, len(data) - len(mark) + 1))
    while at >= 0:
        if mark.startswith(data[at:]):
            return len(data) - at
        at = data.find(mark[:1], at + 1)
    return 0


def start(stream: BinaryIO, logger: logging.Logger, label: str, **options: Any) -> threading.Thread:
    """Pump ``stream`` (a pipe's read end, which the pump then owns and closes) into the log, in a daemon thread."""
    return OutputReader(stream, logger, label, **options).thread

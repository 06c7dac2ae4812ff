"""Calls both ways over a pair of pipes: the supervisor and each of its listener processes
(:mod:`bridge.web.workers`, :mod:`bridge.web.worker`).

One JSON object a line. A call is ``{"call": N, "op": ..., "args": {...}}``, its answer
``{"answer": N, "result": ...}`` or ``{"answer": N, "error": "..."}``; ``{"note": ..., ...}`` wants
no answer (a log record). Each side reads its pipe in a thread of its own and runs the calls it
is asked in a small pool (a call may itself call back: the console's status asks the supervisor,
whose status asks every listener process), so that no call waits on its own reader.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

log = logging.getLogger("ombridge.web")
CALL_TIMEOUT = 10.0  # seconds a call waits for its answer before it fails


class PipeClosed(Exception):
    """The other side has gone (its pipe reached its end), or did not answer in time."""


class Pipe:
    """One end: ``call(op, **args)`` the other side; ``handle`` answers the other side's calls,
    ``on_note`` takes its notes; ``on_close`` runs once when the other side's pipe ends."""

    def __init__(self, reading: IO[bytes], writing: IO[bytes], name: str,
                 handle: Callable[[str, dict[str, Any]], Any], on_note: Callable[[dict[str, Any]], None] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.reading, self.writing, self.name = reading, writing, name
        self.handle, self.on_note, self.on_close = handle, on_note, on_close
        self._numbers = itertools.count(1)
        self._waiting: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()  # the writing end, and the calls waiting
        self._pool = ThreadPoolExecutor(4, thread_name_prefix=f"{name}-call")
        self.closed = False
        self._reader = threading.Thread(target=self._read, name=f"{name}-pipe", daemon=True)

    def start(self) -> None:
        """Start reading the other side."""
        self._reader.start()

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        """``op(**args)`` on the other side; its result, or :class:`PipeClosed`."""
        number = next(self._numbers)
        answer: Future[Any] = Future()
        with self._lock:
            if self.closed:
                raise PipeClosed(f"{self.name}: gone")
            self._waiting[number] = answer
        try:
            self._send({"call": number, "op": op, "args": args})
            return answer.result(timeout)
        except TimeoutError:
            raise PipeClosed(f"{self.name}: no answer to {op} within {timeout:g}s") from None
        finally:
            with self._lock:
                self._waiting.pop(number, None)

    def note(self, **fields: Any) -> None:
        """Tell the other side something that wants no answer (dropped once it is gone)."""
        try:
            self._send({"note": True, **fields})
        except PipeClosed:
            pass

    def _send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self.closed:
                raise PipeClosed(f"{self.name}: gone")
            try:
                self.writing.write(line)
                self.writing.flush()
            except (OSError, ValueError) as exc:  # (ValueError: a closed file)
                raise PipeClosed(f"{self.name}: {exc}") from None

    def _read(self) -> None:
        try:
            for line in self.reading:
                message = json.loads(line)
                if "answer" in message:
                    with self._lock:
                        waiting = self._waiting.get(message["answer"])
                    if waiting is not None:
                        if "error" in message:
                            waiting.set_exception(PipeClosed(message["error"]))
                        else:
                            waiting.set_result(message.get("result"))
                elif "call" in message:
                    try:
                        self._pool.submit(self._answer, message)
                    except RuntimeError:  # closed meanwhile: the caller's wait ends with the pipe
                        pass
                elif self.on_note is not None:
                    self.on_note(message)
        except (OSError, ValueError) as exc:
            log.warning("%s: the pipe broke: %s", self.name, exc)
        finally:
            self.close()
            if self.on_close is not None:
                self.on_close()

    def _answer(self, message: dict[str, Any]) -> None:
        try:
            reply = {"answer": message["call"], "result": self.handle(message["op"], message.get("args") or {})}
        except Exception as exc:  # noqa: BLE001 - said to the caller, who decides
            reply = {"answer": message["call"], "error": f"{type(exc).__name__}: {exc}"}
        try:
            self._send(reply)
        except PipeClosed:
            pass

    def close(self) -> None:
        """Stop: the calls waiting fail with :class:`PipeClosed`; the writing end is closed."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            waiting, self._waiting = list(self._waiting.values()), {}
            try:
                self.writing.close()
            except OSError:
                pass
        for answer in waiting:
            if not answer.done():
                answer.set_exception(PipeClosed(f"{self.name}: gone"))
        self._pool.shutdown(wait=False)

"""Group commit: many requests' events stored in one durable transaction, then acknowledged.

A request hands its events to :meth:`GroupCommitter.commit` and waits. One thread takes
everything pending, stores it with :func:`bridge.eventcore.events.send_many` (one ``BEGIN IMMEDIATE ...
COMMIT``; the event core runs ``synchronous=FULL``, so the commit is on disk when it returns),
wakes the Event Manager, and only then resolves every waiting request. So a 2xx always follows a
commit, and N concurrent requests cost one fsync instead of N.

``send_many`` is all-or-none: when a batch is refused (one request named an unknown topic, say),
each of its requests is stored again on its own, so only the bad one gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import store
from ..delivery.sending import deliver
from ..errors import BridgeError, UsageError
from ..eventcore import builtins, events
from ..outage import Outage
from ..store import Store
from . import forwarded

log = logging.getLogger("ombridge.web")

MAX_BATCH = 5000  # events in one transaction
WAKE_EVERY = 0.002  # seconds: the Event Manager is woken at most this often
PROBE_EVERY = 2.0  # seconds between two looks at the event core while an outage is said and no request comes


class CommitFailed(BridgeError):
    """The event core could not store the events (disk full, I/O error): nothing was acknowledged."""


class _Stale(Exception):
    """The committer's connection was dropped by the server while it lay idle (a database
    restart seen by no request of this process): the group was not stored; a new connection
    gets one more try."""


class _Work:
    __slots__ = ("items", "force", "loop", "future", "results", "error")

    def __init__(self, items: list[tuple[str, Any]], force: bool, loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[list[events.SendResult]]) -> None:
        self.items, self.force, self.loop, self.future = items, force, loop, future
        self.results: list[events.SendResult] | None = None
        self.error: BaseException | None = None


def _resolve(works: list[_Work]) -> None:
    for w in works:
        if w.future.done():  # the request went away (client disconnected, cancelled)
            continue
        if w.error is not None:
            w.future.set_exception(w.error)
        else:
            w.future.set_result(w.results or [])


class GroupCommitter:
    """One thread that stores what concurrent requests hand it, a batch per transaction."""

    def __init__(self, store: Store, wake: Callable[[], None] | None = None, wake_every: float = WAKE_EVERY) -> None:
        self.store = store  # the process's one Store
        self.wake = wake
        self.wake_every = wake_every
        self.commits = 0
        self.events = 0
        self._pending: deque[_Work] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.outage = Outage(log, "could not store events received over HTTP")

    def start(self) -> None:
        """Open the event core (defining the built-in topics if missing) and start the thread."""
        conn = self.store.connect()
        builtins.ensure_all(conn)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(conn,), name="group-commit", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is pending, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    async def commit(self, items: list[tuple[str, Any]], force: bool = False) -> list[events.SendResult]:
        """Store ``items`` (topic, key) durably, sharing a transaction with concurrent callers.

        Returns one :class:`SendResult` per item once committed; raises the event core's
        :class:`UsageError` for a refused request, :class:`CommitFailed` when nothing could be stored.
        """
        loop = asyncio.get_running_loop()
        work = _Work(items, force, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise CommitFailed("the listener is stopping")
            self._pending.append(work)
            if len(self._pending) == 1:
                self._cond.notify()
        return await work.future

    def _take(self, timeout: float | None) -> list[_Work] | None:
        """What is pending ([] when ``timeout`` passed first; None once stopping with nothing left)."""
        with self._cond:
            if not self._pending:
                if self._stopping:
                    return None
                self._cond.wait(timeout)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0].items) <= MAX_BATCH):
                w = self._pending.popleft()
                batch.append(w)
                size += len(w.items)
            return batch

    def _run(self, conn: Any) -> None:
        wake_at: float | None = None  # when the Event Manager is to be woken for what was stored
        last_wake = 0.0
        try:
            while True:
                timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
                if self.outage.began is not None:  # an outage said: its end is said too, request or not
                    timeout = PROBE_EVERY if timeout is None else min(timeout, PROBE_EVERY)
                batch = self._take(timeout)
                if batch is None:
                    break
                if not batch and self.outage.began is not None:
                    conn = self._probe(conn)
                conn, stored = self._store_batch(conn, batch)
                if stored and wake_at is None:
                    wake_at = max(time.monotonic(), last_wake + self.wake_every)
                if wake_at is not None and time.monotonic() >= wake_at:
                    # Before the answers: the deliveries may start while the answers travel.
                    # Coalesced (at most one wake every wake_every seconds) so that under load the
                    # lanes find bigger batches instead of waking for every commit.
                    if self.wake is not None:
                        self.wake()
                    last_wake, wake_at = time.monotonic(), None
                by_loop: dict[asyncio.AbstractEventLoop, list[_Work]] = {}
                for w in batch:
                    by_loop.setdefault(w.loop, []).append(w)
                for loop, works in by_loop.items():
                    try:
                        loop.call_soon_threadsafe(_resolve, works)
                    except RuntimeError:  # that loop is closed: nobody waits any more
                        pass
            if wake_at is not None and self.wake is not None:
                self.wake()
        finally:
            conn.close()

    def _probe(self, conn: Any) -> Any:
        # While no request comes (another listener process may take them all), the end of an
        # outage is found by asking the event core, and said as a commit would say it.
        try:
            conn, _ = self.store.using(conn, lambda c: c.execute("SELECT 1").fetchall())
        except (BridgeError, *store.failures()):
            return conn
        self.outage.recovered()
        return conn

    def _store_batch(self, conn: Any, batch: list[_Work]) -> tuple[Any, bool]:
        """Store a batch on ``conn``, or on a new connection when the database restarted (a batch
        that finds it still away fails with the reason: 503, OMi sends it again)."""
        if not batch:
            return conn, False
        try:
            conn = self.store.reopen(conn)
            try:
                return conn, self._store(conn, batch, retry=True)
            except _Stale:  # (as Store.using does for the other long-lived connections)
                conn = self.store.reopen(conn)
                self._store(conn, [w for w in batch if w.results is None and w.error is None])
                return conn, any(r.deliveries for w in batch if w.results for r in w.results)
        except (BridgeError, *store.failures()) as exc:
            error = self._failed(exc)
            for w in batch:
                if w.results is None:
                    w.error = error
            return conn, False

    def _store(self, conn: Any, batch: list[_Work], retry: bool = False) -> bool:
        """Store a batch (forced and unforced requests in a transaction each); True when
        deliveries were created."""
        stored = False
        for force in (True, False):
            group = [w for w in batch if w.force is force]
            if group:
                stored = self._commit(conn, group, force, retry=retry) or stored
        return stored

    def _commit(self, conn: Any, group: list[_Work], force: bool, sift: bool = True, retry: bool = False) -> bool:
        """Store ``group`` in one transaction; True when deliveries were created."""
        items = [item for w in group for item in w.items]
        try:
            results = self._send(conn, items, force)
        except (UsageError, events.SystemSubscriberDisabled) as refused:
            if len(group) == 1:
                group[0].error = refused
                return False
            if sift:  # find the refused requests without writing, store the others together
                good = [w for w in group if not self._refused(conn, w)]
                return bool(good) and self._commit(conn, good, force, sift=False)
            return any([self._commit(conn, [w], force, sift=False) for w in group])
        except Exception as exc:  # noqa: BLE001 - the disk, the database: nothing was stored
            stale = isinstance(exc, store.unreachable()) and store.broken(conn) and not store.failed_at_commit(exc)
            if retry and stale:
                raise _Stale from exc
            error = self._failed(exc)
            for w in group:
                w.error = error
            return False
        self.outage.recovered()
        n = 0
        for w in group:
            w.results = results[n:n + len(w.items)]
            n += len(w.items)
        return any(r.deliveries for r in results)

    @staticmethod
    def _refused(conn: Any, work: _Work) -> bool:
        try:
            for topic, key in work.items:
                events.match(conn, topic, key)
        except (UsageError, events.SystemSubscriberDisabled) as exc:
            work.error = exc
            return True
        return False

    def _send(self, conn: Any, items: list[tuple[str, Any]], force: bool) -> list[events.SendResult]:
        # Stored (the caller's transaction holds the OMi mapping too), then the synchronized calls.
        results = deliver(conn, forwarded.store_all(conn, items, force), cwd=self.store.root)
        self.commits += 1
        self.events += len(items)
        return results

    def _failed(self, exc: BaseException) -> CommitFailed:
        # (each refused request is counted, the outage said once: OMi may retry hundreds a minute)
        self.outage.failed(f"{exc} (requests are answered 503 meanwhile)")
        return CommitFailed(f"the event core could not store the events: {exc}")

    def status(self) -> dict[str, Any]:
        """Commits and events so far, and how many requests wait."""
        return {"commits": self.commits, "events": self.events, "pending": len(self._pending),
                "events_per_commit": round(self.events / self.commits, 1) if self.commits else None}


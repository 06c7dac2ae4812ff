"""Calls both ways over a pair of real pipes (bridge/web/pipes.py): what the supervisor and each
listener process say to each other."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from bridge.web.pipes import Pipe, PipeClosed


def _pair(handle_a: Any, handle_b: Any, **b_options: Any) -> tuple[Pipe, Pipe]:
    a_to_b, b_to_a = os.pipe(), os.pipe()
    a = Pipe(os.fdopen(b_to_a[0], "rb", buffering=0), os.fdopen(a_to_b[1], "wb"), "a", handle_a)
    b = Pipe(os.fdopen(a_to_b[0], "rb", buffering=0), os.fdopen(b_to_a[1], "wb"), "b", handle_b, **b_options)
    a.start()
    b.start()
    return a, b


def test_calls_both_ways_and_a_call_that_calls_back() -> None:
    holder: dict[str, Pipe] = {}

    def on_a(op: str, args: dict[str, Any]) -> Any:
        if op == "status":  # the supervisor's status asks every process for its own: a call back
            return {"supervisor": True, "mine": holder["a"].call("mine")}
        raise ValueError(f"unknown call {op!r}")

    def on_b(op: str, args: dict[str, Any]) -> Any:
        return {"requests": 7} if op == "mine" else args

    a, b = _pair(on_a, on_b)
    holder["a"] = a
    try:
        assert b.call("status") == {"supervisor": True, "mine": {"requests": 7}}
        assert a.call("echo", x=[1, "é"]) == {"x": [1, "é"]}
        with pytest.raises(PipeClosed, match="ValueError: unknown call 'nope'"):
            b.call("nope")  # the other side's failure, said to the caller
        results: list[Any] = []
        threads = [threading.Thread(target=lambda n=n: results.append(a.call("echo", n=n))) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r["n"] for r in results) == list(range(20))  # answers find their callers
    finally:
        a.close()
        b.close()


def test_notes_arrive_and_the_end_of_a_pipe_fails_what_waits() -> None:
    notes: list[dict[str, Any]] = []
    ended = threading.Event()
    blocked = threading.Event()

    def slow(op: str, args: dict[str, Any]) -> Any:
        blocked.wait(5)
        return None

    a, b = _pair(slow, lambda op, args: None, on_note=notes.append, on_close=ended.set)
    a.note(log="ombridge.web", level=20, message="hello")
    failure: list[BaseException] = []
    waiter = threading.Thread(target=lambda: failure.extend(_fails(b)))
    waiter.start()
    a.close()  # the other side goes away while b waits for an answer
    assert ended.wait(5)
    waiter.join(5)
    blocked.set()
    assert notes == [{"note": True, "log": "ombridge.web", "level": 20, "message": "hello"}]
    assert failure and isinstance(failure[0], PipeClosed)
    with pytest.raises(PipeClosed):
        b.call("anything")


def _fails(pipe: Pipe) -> list[BaseException]:
    try:
        pipe.call("slow", timeout=5)
    except PipeClosed as exc:
        return [exc]
    return []

"""The script's output into the log: whole lines, cut long lines, a byte budget per window, and real floods."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import wait_for

from bridge import outputtext
from bridge.home import Home
from bridge.ombacksync import scriptlog
from bridge.ombacksync.perlhost import PerlHost
from bridge.ombacksync.scriptlog import LineLogger

log = logging.getLogger("ombridge.test.scriptlog")
NOTE = re.compile(r"^L: (\d+) lines \((\d+) bytes\) not logged: output above (\d+) bytes per (\S+)s$")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.INFO, logger=log.name)
    return lambda: [r.getMessage() for r in caplog.records if r.name == log.name]


def lines(clock: Clock | None = None, **options: object) -> LineLogger:
    return LineLogger(log, "L", clock=clock or Clock(), **options)  # type: ignore[arg-type]


def test_lines_split_across_chunks_are_logged_whole(records: Callable[[], list[str]]) -> None:
    out = lines()
    for chunk in (b"ab", b"c\nde", b"f\r\n\n", b"tail without newline"):
        out.feed(chunk)
    assert records() == ["L: abc", "L: def", "L: "]
    out.finish()
    assert records()[-1] == "L: tail without newline"


def test_a_long_line_is_cut_and_says_how_much(records: Callable[[], list[str]]) -> None:
    out = lines(max_line=10)
    out.feed(b"0123456789" + b"x" * 15 + b"\nshort\n")
    out.feed(b"abcdefgh")
    out.feed(b"ijklmnop\n")  # the cut line may arrive in pieces
    assert records() == ["L: 0123456789 [... 15 more bytes of this line not logged]", "L: short",
                         "L: abcdefghij [... 6 more bytes of this line not logged]"]


def test_bytes_that_are_not_utf8_are_read_as_latin1(records: Callable[[], list[str]]) -> None:
    lines().feed("café ".encode() + b"St\xf6rung \xff\n")
    assert records() == ["L: café Störung ÿ"]


def test_a_tail_cut_inside_a_character_drops_the_stray_bytes() -> None:
    assert outputtext.text_of("✓ done\n".encode()[1:], cut=True) == " done\n"
    assert outputtext.text_of(b"\xa3 5", cut=False) == "£ 5"  # uncut: a Latin-1 pound sign


def test_past_the_budget_lines_are_counted_and_noted_once_per_window(records: Callable[[], list[str]]) -> None:
    clock = Clock()
    out = lines(clock, budget=100, window=1.0)
    out.feed(b"".join(b"line %04d\n" % n for n in range(1000)))  # 10 bytes a line
    assert records() == [f"L: line {n:04d}" for n in range(10)]  # 100 bytes: the budget
    assert out.seconds_to_note() == 1.0
    clock.now += 0.5
    out.idle()
    assert len(records()) == 10  # the window is not over yet
    clock.now += 0.5
    assert out.seconds_to_note() == 0.0
    out.idle()
    assert NOTE.match(records()[-1]).groups() == ("990", "9900", "100", "1")  # type: ignore[union-attr]
    out.feed(b"next window\n")
    assert records()[-1] == "L: next window" and out.seconds_to_note() is None
    assert out.total_bytes == 10012


def test_the_note_comes_before_the_next_windows_lines_and_at_the_end(records: Callable[[], list[str]]) -> None:
    clock = Clock()
    out = lines(clock, budget=5, window=1.0)
    out.feed(b"aaaaa\nbbbbb\nccc")
    clock.now += 2
    out.feed(b"cc\nddd\n")  # a new window: first the note for b, then c and d under the new budget
    out.finish()
    messages = records()
    assert [messages[0], messages[2]] == ["L: aaaaa", "L: ccccc"]
    assert [NOTE.match(messages[i]).groups()[:2] for i in (1, 3)] == [("1", "6"), ("1", "4")]  # type: ignore[union-attr]
    assert len(messages) == 4


def test_a_real_flood_through_a_pipe_is_bounded_and_accounted_for(records: Callable[[], list[str]]) -> None:
    count = 50_000
    perl = subprocess.Popen(["perl", "-e", f'print "line $_\\n" for 1 .. {count}'], stdout=subprocess.PIPE)
    assert perl.stdout is not None
    thread = scriptlog.start(perl.stdout, log, "L", budget=4096, window=60.0)
    thread.join(timeout=60)
    assert not thread.is_alive() and perl.wait(timeout=60) == 0
    messages = records()
    logged = [m for m in messages if not NOTE.match(m)]
    notes = [NOTE.match(m) for m in messages if NOTE.match(m)]
    assert logged == [f"L: line {n}" for n in range(1, len(logged) + 1)]
    assert sum(len(m) - 2 for m in logged) <= 4096 + 20  # the budget, give or take the last line
    assert len(notes) == 1 and int(notes[0].group(1)) + len(logged) == count  # type: ignore[union-attr]
    assert perl.stdout.closed


def test_a_script_flooding_stdout_is_served_and_its_log_stays_bounded(
    home: Home, use_script: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    use_script("chatty")  # "flood" prints 2000 lines of 1000 bytes (2 MB)
    caplog.set_level(logging.INFO, logger="ombridge.script")
    with PerlHost(home) as host:
        outcomes = host.close_many(["A", "flood", "B"])
        assert all(o.ok for o in outcomes) and host.restarts == 0
        wait_for(lambda: "not logged: output above" in caplog.text, what="the note of the lines not logged")
    script = [r for r in caplog.records if r.name == "ombridge.script"]
    assert sum(len(r.getMessage()) for r in script) < scriptlog.BUDGET * 3  # a window or two, not 2 MB
    assert any(re.search(r"\d+ lines \(\d+ bytes\) not logged", r.getMessage()) for r in script)


MARK = b"\0" + b"0123456789abcdef" * 2 + b"\0"


def reader(**options: object) -> tuple[scriptlog.OutputReader, int]:
    """An OutputReader on a real pipe, and the pipe's write end."""
    read_end, write_end = os.pipe()
    return scriptlog.OutputReader(os.fdopen(read_end, "rb", buffering=0), log, "L", MARK, **options), write_end


def test_output_is_split_at_the_marks_whoever_reads_and_wherever_a_read_ends(
        records: Callable[[], list[str]]) -> None:
    out, pipe = reader()
    os.write(pipe, b"load\n" + MARK + b"one\n" + MARK[:7])  # a read may end inside a mark
    wait_for(lambda: records() == ["L: load", "L: one"], what="the reader thread got there")
    os.write(pipe, MARK[7:] + MARK + b"three, no newline" + MARK + b"\x00 a NUL and " + MARK[:-1] + b"X\n" + MARK)
    assert out.take_calls(1) == ["load\n"]
    assert out.take_calls(3) == ["one\n", "", "three, no newline"]
    assert out.take_calls(1) == ["\x00 a NUL and " + MARK[:-1].decode() + "X\n"]  # not the mark: kept
    assert out.take_calls(2) == ["", ""]  # no mark came for these (a stand-in host writes none)
    os.write(pipe, b"then the host died in a call\n")
    os.close(pipe)
    assert out.take_leftover() == "then the host died in a call\n"
    out.join(5)
    assert not out.thread.is_alive()
    # the log has lines (a call's last line without its newline runs on into the next one's)
    assert records()[-2:] == ["L: three, no newline\x00 a NUL and " + MARK[:-1].decode() + "X",
                              "L: then the host died in a call"]
    assert not any("0123456789abcdef" * 2 + "\x00" in r for r in records()[:-2])


def test_a_tail_keeps_the_last_bytes_of_a_call_and_says_it_was_cut() -> None:
    out, pipe = reader()
    os.write(pipe, "✓".encode() + b"x" * 5000 + b"\n" + MARK + b"short\n" + MARK)
    long, short = out.take_calls(2)
    assert long == "x" * 4095 + "\n" and short == "short\n"
    os.write(pipe, b"\xa3" + b"y" * 4095 + MARK)  # 4096 bytes, not cut: the Latin-1 pound sign stays
    assert out.take_calls(1) == ["£" + "y" * 4095]
    os.close(pipe)


def test_without_a_mark_output_only_goes_to_the_log(records: Callable[[], list[str]]) -> None:
    read_end, pipe = os.pipe()
    out = scriptlog.OutputReader(os.fdopen(read_end, "rb", buffering=0), log, "L")
    os.write(pipe, b"a\n" + MARK + b"b\n")
    os.close(pipe)
    out.join(5)
    assert out.take_calls(2) == ["", ""] and out.take_leftover() == ""
    assert records() == ["L: a", "L: " + MARK.decode() + "b"]


def test_the_reader_looks_for_a_note_due_within_a_window_though_another_thread_read_the_lines(
        records: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    # The race: this reader's thread waits in select with nothing to note; the caller's take_calls
    # reads a flood past the budget and empties the pipe before select looks again. Its wait must
    # end within a window all the same (it ended only at the script's next output). The select is
    # spied on: the race itself is not one a test can time.
    import types

    waits: list[float | None] = []
    real = scriptlog.select.select

    def spy(r: list[int], w: list[int], x: list[int], timeout: float | None = None) -> object:
        waits.append(timeout)
        return real(r, w, x, timeout)

    monkeypatch.setattr(scriptlog, "select", types.SimpleNamespace(select=spy))
    out, pipe = reader(budget=10, window=0.2)
    wait_for(lambda: waits, timeout=5, what="the reader waiting")
    with out._lock:  # the caller reads first, and reads it all
        os.write(pipe, b"first line\n" * 5)
        out._read(until_empty=True)
    wait_for(lambda: any(NOTE.match(r) for r in records()), timeout=5, what="the note")
    assert None not in waits
    os.close(pipe)
    out.join(5)

"""What ``ragproxy index`` shows while it works, one of three ways:

- ``Bars`` on a terminal: a bar per stage with counts and an estimated time left (rich); log lines
  are printed above the bars, so a warning never lands in the middle of one;
- ``Lines`` otherwise (a pipe, a file, a CI log): plain lines, one every few seconds and one at
  the end of each stage, with no escape codes;
- ``Silent`` for ``--json``: nothing while working; the command prints its summary itself."""

from __future__ import annotations

import io
import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Silent:
    """Shows nothing; the base the other two fill in."""

    wants_total = False  # whether the scan should count the files first, for a bar's total

    @property
    def log_stream(self) -> Any:
        return sys.stderr

    def __enter__(self) -> Silent:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def start(self, label: str, total: int | None, unit: str) -> None:
        """A new stage (a folder's scan, the embedding) of ``total`` units, if known."""

    def advance(self, done: int, text: str, label: str | None = None) -> None:
        """``done`` units of the stage so far; ``text`` says the same in words; ``label``, if
        given, replaces the stage's label (a count of pages read by OCR added to it)."""

    def finish(self, text: str) -> None:
        """The stage is over; ``text`` is its summary line."""


class Lines(Silent):
    """Plain lines: one every few seconds while a stage runs, then its summary."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.last = time.monotonic()

    def advance(self, done: int, text: str, label: str | None = None) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._write(f"{text} ({label})" if label and label not in text else text)

    def finish(self, text: str) -> None:
        self.last = time.monotonic()
        self._write(text)

    def _write(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Bars(Silent):
    """Progress bars on the terminal standard error is."""

    wants_total = True

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TaskProgressColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=True,  # finished bars give way to summary lines; nothing is left at the end
        )
        self.task: TaskID | None = None
        self._lines = _ConsoleLines(console)

    @property
    def log_stream(self) -> Any:
        return self._lines

    def __enter__(self) -> Bars:
        self.bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bars.stop()

    def start(self, label: str, total: int | None, unit: str) -> None:
        self.task = self.bars.add_task(label, total=total, unit=unit)

    def advance(self, done: int, text: str, label: str | None = None) -> None:
        if self.task is not None:
            if label is not None:
                self.bars.update(self.task, completed=done, description=label)
            else:
                self.bars.update(self.task, completed=done)

    def finish(self, text: str) -> None:
        if self.task is not None:  # the finished bar gives way to its summary line
            self.bars.remove_task(self.task)
            self.bars.refresh()
            self.task = None
        self._lines.write(text + "\n")


class _ConsoleLines(io.TextIOBase):
    """A text stream whose whole lines rich prints above its live bars, as they are: no markup,
    no highlighting, no wrapping added (the terminal wraps a long line itself)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.console.print(Text(line), soft_wrap=True, highlight=False)
        return len(text)


def progress_for(*, json: bool) -> Silent:
    """Bars on a terminal (rich decides, so ``FORCE_COLOR`` and ``TTY_COMPATIBLE`` count), plain
    lines elsewhere and on a dumb terminal, nothing for ``--json``."""
    if json:
        return Silent()
    console = Console(stderr=True)
    if console.is_terminal and not console.is_dumb_terminal:
        return Bars(console)
    return Lines()

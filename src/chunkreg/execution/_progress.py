"""A dependency-free progress line for long runs (stderr)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["Progress"]


def _fmt_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


#: True inside :func:`silenced`: progress lines are not drawn.
_silenced = False


@contextlib.contextmanager
def silenced(active: bool = True):
    """Draw no progress lines inside the block (``-q`` of the workflow scripts).

    The scripts call the workflows with their default ``progress=True``; this turns the lines
    off for the duration of a quiet run and restores the previous state after it.
    """
    global _silenced
    before, _silenced = _silenced, bool(active) or _silenced
    try:
        yield
    finally:
        _silenced = before


class Progress:
    """Counts finished tasks and redraws one status line.

    On a terminal the line is redrawn in place at most every ``interval`` seconds; in a log
    file (not a TTY) a line is written every ``log_interval`` seconds and at the end. Between
    completions a heartbeat redraws it at least every ``heartbeat`` seconds, with the elapsed
    time and, given ``running``, the number of tasks in flight, so a long task never looks
    like a hang. Nothing is drawn inside :func:`silenced` (a script's ``-q``).
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        enabled: bool = True,
        stream=None,
        interval: float = 0.2,
        log_interval: float = 15.0,
        heartbeat: float = 15.0,
        running: Callable[[], int] | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled and total > 0 and not _silenced
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.done = 0
        self.failed = 0
        self.start = time.perf_counter()
        self.running = running
        self._last = -float("inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = None
        if self.enabled and heartbeat > 0:
            self._beat = threading.Thread(
                target=self._heartbeat, args=(heartbeat,), name=f"progress-{label}", daemon=True
            )
            self._beat.start()

    def update(self, n: int = 1, *, failed: bool = False) -> None:
        with self._lock:
            self.done += n
            self.failed += int(failed)
            now = time.perf_counter()
            if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
                self._last = now
                self._draw(now)

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(min(every, 1.0)):
            with self._lock:
                now = time.perf_counter()
                if self.done < self.total and now - self._last >= every:
                    self._last = now
                    self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * self.done / self.total)
        bar = "#" * filled + "." * (width - filled)
        text = f"{self.label}: {self.done}/{self.total} [{bar}] {rate:.1f}/s"
        text += f" elapsed {_fmt_seconds(elapsed)}"
        if self.done < self.total and eta == eta:
            text += f" eta {_fmt_seconds(eta)}"
        if self.failed:
            text += f" failed {self.failed}"
        if self.running is not None and self.done < self.total:
            text += f" running {self.running()}"
        end = "" if self.tty and self.done < self.total else "\n"
        prefix = "\r" if self.tty else ""
        self.stream.write(prefix + text + end)
        self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.enabled and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

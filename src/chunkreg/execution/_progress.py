"""A dependency-free progress line for long runs (stderr)."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


def _fmt_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts finished tasks and redraws one status line.

    On a terminal the line is redrawn in place at most every ``interval`` seconds; in a log
    file (not a TTY) a line is written every ``log_interval`` seconds and at the end.
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
    ) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled and total > 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.done = 0
        self.failed = 0
        self.start = time.perf_counter()
        self._last = -float("inf")

    def update(self, n: int = 1, *, failed: bool = False) -> None:
        self.done += n
        self.failed += int(failed)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
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
        end = "" if self.tty and self.done < self.total else "\n"
        prefix = "\r" if self.tty else ""
        self.stream.write(prefix + text + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

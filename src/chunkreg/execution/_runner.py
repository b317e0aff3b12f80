"""Run many independent tasks with bounded parallelism, retries, progress and resume."""

from __future__ import annotations

import logging
import time
import traceback as tb
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError
from ._client import is_synchronous
from ._progress import Progress
from ._report import RunReport, TaskFailure

__all__ = ["run_tasks"]

_FLUSH_EVERY = 1.0  # seconds between completion-record writes

logger = logging.getLogger(__name__)


class _Marks:
    """Buffers completion marks and writes them to the record in batches."""

    def __init__(self, record) -> None:
        self.record = record
        self.pending: list[int] = []
        self.last = time.perf_counter()

    def add(self, index: int) -> None:
        if self.record is None:
            return
        self.pending.append(index)
        if time.perf_counter() - self.last >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.record is not None and self.pending:
            self.record.mark_done_many(self.pending)
            self.pending = []
        self.last = time.perf_counter()


def _describe(describe, task) -> str:
    try:
        return describe(task) if describe is not None else repr(task)
    except Exception as exc:  # a broken describe must not hide the real failure
        return f"<undescribable task: {exc}>"


def run_tasks(
    func: Callable[[Any], Any],
    tasks: Sequence,
    *,
    client,
    label: str = "tiles",
    record=None,
    max_in_flight: int | None = None,
    retries: int = 2,
    progress: bool = True,
    describe: Callable[[Any], str] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
    skipped: int = 0,
) -> RunReport:
    """Run ``func(task)`` for every task not yet recorded complete.

    Parameters
    ----------
    func : callable
        Picklable function run on a worker; it reads its inputs, writes its outputs and returns a
        small dict (``bytes_read``, ``bytes_written`` and ``seconds`` are summed in the report) or
        any small value handed to ``on_result``.
    tasks : sequence
        Picklable task descriptions (e.g. tiles of a plan), indexable, with ``len``. Task ``i``
        is identified by its index in the completion record.
    client : distributed.Client or SYNCHRONOUS
        From :func:`open_client`.
    label : str
        Plural noun for progress and report ("tiles", "frames"...).
    record : CompletionRecord, optional
        Tasks marked done are skipped; each successful task is marked done after it returns
        (its data is written by then), so a killed run resumes where it stopped.
    max_in_flight : int, optional
        Most tasks submitted at once; default four per worker thread. Keeps the scheduler small
        for runs of millions of tasks.
    retries : int
        Extra attempts for a task that raises.
    progress : bool
        Draw a progress line on stderr.
    describe : callable, optional
        ``describe(task) -> str`` for failure reports (e.g. the tile's region).
    on_result : callable, optional
        ``on_result(index, result)`` called in this process as each task succeeds.
    skipped : int
        Tasks the caller already left out of ``tasks`` because an earlier run completed them
        (for workflows that keep their own completion record); counted in the report.

    Returns
    -------
    RunReport
        Failed tasks are listed, not raised: call ``report.raise_if_failed()``.
    """
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}.")
    n = len(tasks)
    if skipped < 0:
        raise InputError(f"skipped must be >= 0, got {skipped}.")
    report = RunReport(label=label, n_tasks=n + skipped)
    if record is not None:
        if record.n_tasks != n:
            raise InputError(f"completion record has {record.n_tasks} tasks but {n} were given.")
        done = record.done_mask()
        todo = [i for i in range(n) if not done[i]]
    else:
        todo = list(range(n))
    report.n_skipped = n - len(todo) + skipped
    logger.info("%s: %d to run, %d already complete", label, len(todo), report.n_skipped)
    in_flight: list[int] = [0]  # tasks submitted and not yet returned, for the heartbeat
    bar = Progress(len(todo), label, enabled=progress, running=lambda: in_flight[0])
    marks = _Marks(record)
    start = time.perf_counter()

    def succeeded(i: int, result) -> None:
        report.n_done += 1
        report.add_result(result)
        marks.add(i)
        if on_result is not None:
            on_result(i, result)
        bar.update()

    def failed(i: int, exc: BaseException, trace: str) -> None:
        logger.warning(
            "%s: %s failed after %d attempt(s): %s: %s",
            label,
            _describe(describe, tasks[i]),
            retries + 1,
            type(exc).__name__,
            exc,
        )
        report.n_failed += 1
        report.failures.append(
            TaskFailure(i, _describe(describe, tasks[i]), f"{type(exc).__name__}: {exc}", trace)
        )
        bar.update(failed=True)

    try:
        if is_synchronous(client):
            in_flight[0] = 1
            _run_here(func, tasks, todo, retries, succeeded, failed)
        else:
            _run_on_cluster(
                func,
                tasks,
                todo,
                client,
                label,
                retries,
                max_in_flight,
                succeeded,
                failed,
                in_flight,
            )
    finally:
        marks.flush()
        bar.close()
        report.wall_time = time.perf_counter() - start
    report.failures.sort(key=lambda f: f.index)
    return report


def _run_here(func, tasks, todo, retries, succeeded, failed) -> None:
    for i in todo:
        for attempt in range(retries + 1):
            try:
                result = func(tasks[i])
            except Exception as exc:
                if attempt == retries:
                    failed(i, exc, tb.format_exc())
            else:
                succeeded(i, result)
                break


def _run_on_cluster(
    func, tasks, todo, client, label, retries, max_in_flight, succeeded, failed, in_flight
) -> None:
    from distributed import as_completed

    if max_in_flight is not None and max_in_flight < 1:
        raise InputError(f"max_in_flight must be >= 1, got {max_in_flight}.")
    window = _Window(client, max_in_flight)
    run_id = uuid.uuid4().hex[:8]
    queue = iter(todo)
    index_of: dict[str, int] = {}
    futures = as_completed()

    def fill() -> None:
        while len(index_of) < window.size():
            i = next(queue, None)
            if i is None:
                return
            future = client.submit(
                func, tasks[i], key=f"{label}-{run_id}-{i}", retries=retries, pure=False
            )
            index_of[future.key] = i
            futures.add(future)
        in_flight[0] = len(index_of)

    fill()
    try:
        for future in futures:
            i = index_of.pop(future.key)
            in_flight[0] = len(index_of)
            if future.status == "finished":
                succeeded(i, future.result())
            else:
                exc = future.exception()
                trace = "".join(tb.format_tb(future.traceback())) if future.traceback() else ""
                failed(i, exc, trace)
            future.release()
            fill()
    except BaseException:
        client.cancel(list(futures.futures))
        raise


class _Window:
    """How many tasks may be in flight: fixed, or four per worker thread of the live cluster.

    The cluster may grow or shrink during a run (adaptive or batch-queued workers), so the
    automatic size is re-read from the scheduler every few seconds.
    """

    _REFRESH = 5.0  # seconds

    def __init__(self, client, fixed: int | None) -> None:
        self.client = client
        self.fixed = fixed
        self._size = 0
        self._checked = -float("inf")

    def size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        now = time.perf_counter()
        if now - self._checked >= self._REFRESH:
            self._checked = now
            self._size = 4 * max(1, sum(self.client.nthreads().values()))
        return self._size

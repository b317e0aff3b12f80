"""Run a workflow's stages in order and fold their reports into one :class:`RunReport`.

A stage is one :func:`~chunkreg.execution.run_tasks` call: its tasks, the function they run
and how completion is kept — a :class:`~chunkreg.io.CompletionRecord` for tasks that write
their own output, or a :class:`ResultSink` for tasks that return a few numbers the client
stores. Every workflow goes through :class:`StageRunner`, so resume, failure reporting and
the report's stage lines behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..execution import RunReport, run_tasks
from ._sink import ResultSink

__all__ = ["StageRunner"]


class StageRunner:
    """Runs stages on one client and collects one report.

    Parameters
    ----------
    client : distributed.Client or SYNCHRONOUS
        From :func:`~chunkreg.execution.open_client`.
    label : str
        What the report counts ("tasks", "tiles", "frames"...).
    n_tasks : int
        Tasks of every stage together, if known up front (else summed as stages run).
    progress : bool
        Draw a progress line per stage.
    """

    def __init__(self, client, *, label: str = "tasks", n_tasks: int | None = None,
                 progress: bool = True) -> None:  # fmt: skip
        self.client, self.progress = client, progress
        self._count = n_tasks is None
        self.report = RunReport(label=label, n_tasks=0 if n_tasks is None else n_tasks)
        self.lines: list[str] = []

    def run(
        self,
        name: str,
        func: Callable[[Any], Any],
        tasks: Sequence,
        *,
        record=None,
        sink: ResultSink | None = None,
        items: Callable[[int], Sequence[int]] | None = None,
        label: str | None = None,
        describe: Callable[[Any], str] | None = str,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> bool:
        """Run one stage; returns True when every task succeeded.

        Parameters
        ----------
        name : str
            Stage name, prefixed to its failures and listed in the report's stage lines.
        func, tasks :
            As for :func:`~chunkreg.execution.run_tasks`: ``func(tasks[i])`` on a worker.
        record : CompletionRecord, optional
            Completion of tasks that write their own output.
        sink : ResultSink, optional
            Completion of tasks whose result dict the client stores: task ``i``'s result
            fills rows ``items(i)`` (default ``[i]``), and it is marked complete only once
            stored. Exclusive with ``record``.
        label : str, optional
            Progress label; default ``name``.
        describe, on_result :
            As for :func:`~chunkreg.execution.run_tasks` (``on_result`` gets the stage's own
            task index).
        """
        label = label or name
        if sink is None:
            part = run_tasks(func, tasks, client=self.client, label=label, record=record,
                             progress=self.progress, describe=describe,
                             on_result=on_result)  # fmt: skip
        else:
            if record is not None:
                raise ValueError("a stage keeps completion in a record or a sink, not both")
            todo = sink.todo()
            rows = items or (lambda i: [i])

            def stored(j: int, result) -> None:
                sink.add(todo[j], rows(todo[j]), result)
                if on_result is not None:
                    on_result(todo[j], result)

            try:
                part = run_tasks(func, [tasks[i] for i in todo], client=self.client,
                                 label=label, progress=self.progress, describe=describe,
                                 on_result=stored, skipped=len(tasks) - len(todo))  # fmt: skip
            finally:
                sink.flush()
        self.report.merge(part, prefix=name, count=self._count)
        self.lines.append(
            f"{name}: {part.n_done} done, {part.n_skipped} skipped, {part.n_failed} failed, "
            f"of {part.n_tasks} ({part.wall_time:.1f} s)"
        )
        return part.ok

    def skip(self, name: str, n: int) -> None:
        """Count ``n`` tasks of stage ``name`` as already complete without running it."""
        self.report.n_skipped += n
        if self._count:
            self.report.n_tasks += n
        self.lines.append(f"{name}: {n} skipped (already complete)")

    def stop(self, rest: Sequence[str]) -> None:
        """Note the stages left unrun because of failures."""
        if rest:
            self.lines.append(f"not run because of the failures above: {', '.join(rest)}")

    def finish(self, *, min_stages: int = 2) -> RunReport:
        """The report, with one ``stage N`` note per stage (when at least ``min_stages``)."""
        if len(self.lines) >= min_stages:
            for i, line in enumerate(self.lines):
                self.report.notes[f"stage {i + 1}"] = line
        return self.report

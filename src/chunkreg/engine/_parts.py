"""Stages whose reports are also kept one by one (workflows whose result lists each pass)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..execution import RunReport
from ._stages import StageRunner

__all__ = ["StageParts"]


class StageParts(StageRunner):
    """A :class:`StageRunner` that also keeps each stage's own report in :attr:`parts`.

    :attr:`report` folds every stage in (failures prefixed with their stage's name), as for
    the other workflows; :attr:`parts` maps a stage's name to the report of that stage alone
    (what a time series' ``reports["register"]`` or a mosaic's ``reports["fusion"]`` is).

    Parameters
    ----------
    client : distributed.Client or SYNCHRONOUS
        From :func:`~chunkreg.execution.open_client`.
    label : str
        What the folded report counts.
    progress : bool
        Draw a progress line per stage.
    """

    def __init__(self, client, *, label: str = "tasks", progress: bool = True) -> None:
        super().__init__(client, label=label, progress=progress)
        self.parts: dict[str, RunReport] = {}

    def run(self, name: str, func: Callable[[Any], Any], tasks: Sequence, *,
            label: str | None = None, **kw) -> bool:  # fmt: skip
        """Run one stage (arguments as for :meth:`StageRunner.run`); True if all succeeded.

        ``label`` names what the stage's own report counts (default ``name``).
        """
        stage = StageRunner(self.client, label=label or name, progress=self.progress)
        ok = stage.run(name, func, tasks, label=label, **kw)
        self.add(name, stage)
        return ok

    def add(self, name: str, stage: StageRunner) -> None:
        """Keep the report of ``stage`` (a runner of one or more stages) as part ``name``."""
        part = stage.report
        self.parts[name] = part
        self.report.merge(part, count=True)  # its failures already name their stage
        self.lines += stage.lines

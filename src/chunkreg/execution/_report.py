"""What a run did: counts, failures, bytes and time."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TaskFailedError

__all__ = ["RunReport", "TaskFailure"]


@dataclass(frozen=True)
class TaskFailure:
    """A task that still failed after its retries."""

    index: int
    description: str
    error: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"#{self.index} {self.description}: {self.error}"


@dataclass
class RunReport:
    """Summary of one :func:`run_tasks` call.

    Attributes
    ----------
    label : str
        What the tasks are ("tiles", "frames", "pairs", "chunks"...).
    n_tasks : int
        Tasks in the plan.
    n_done, n_skipped, n_failed : int
        Computed now, already complete from an earlier run, failed after retries.
    failures : list of TaskFailure
        One entry per failed task: index, region (description) and the exception.
    wall_time : float
        Seconds from start to end of the run.
    bytes_read, bytes_written : int
        Summed from what the tasks reported.
    task_seconds : float
        Summed kernel time the tasks reported (``"seconds"`` in their result).
    notes : dict
        Workflow-specific facts worth printing (e.g. the halo chosen).
    warnings : list of str
        What the run's quality control found wrong although every task succeeded (e.g.
        registration made the images less similar); printed by :meth:`summary`.
    """

    label: str
    n_tasks: int
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    failures: list[TaskFailure] = field(default_factory=list)
    wall_time: float = 0.0
    bytes_read: int = 0
    bytes_written: int = 0
    task_seconds: float = 0.0
    notes: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no task failed."""
        return self.n_failed == 0

    @property
    def status(self) -> str:
        """``"failed"`` (some task failed), ``"warning"`` (all done, but the quality control
        found something wrong: see :attr:`warnings`) or ``"ok"``."""
        if not self.ok:
            return "failed"
        return "warning" if self.warnings else "ok"

    @property
    def throughput_mb_s(self) -> float:
        """Bytes read plus written per second of wall time, in MB/s."""
        if self.wall_time <= 0:
            return 0.0
        return (self.bytes_read + self.bytes_written) / self.wall_time / 1e6

    def add_result(self, result) -> None:
        """Fold one task's result dict into the totals."""
        if isinstance(result, dict):
            self.bytes_read += int(result.get("bytes_read", 0))
            self.bytes_written += int(result.get("bytes_written", 0))
            self.task_seconds += float(result.get("seconds", 0.0))

    def merge(self, part: RunReport, *, prefix: str = "", count: bool = False) -> None:
        """Fold the report of one stage of this run into this one.

        Parameters
        ----------
        part : RunReport
            The stage's report.
        prefix : str
            Put before each of its failures' descriptions (the stage's name).
        count : bool
            Also add its tasks to :attr:`n_tasks` (when the total was not known up front).
        """
        if count:
            self.n_tasks += part.n_tasks
        self.n_done += part.n_done
        self.n_skipped += part.n_skipped
        self.n_failed += part.n_failed
        lead = f"{prefix}: " if prefix else ""
        self.failures += [
            TaskFailure(f.index, lead + f.description, f.error, f.traceback) for f in part.failures
        ]
        self.wall_time += part.wall_time
        self.bytes_read += part.bytes_read
        self.bytes_written += part.bytes_written
        self.task_seconds += part.task_seconds
        self.notes.update(part.notes)
        self.warnings += part.warnings

    def summary(self, max_failures: int = 10) -> str:
        """Multi-line human-readable summary."""
        lines = [
            f"{self.label}: {self.n_done} done, {self.n_skipped} skipped (already complete), "
            f"{self.n_failed} failed, of {self.n_tasks}",
            f"read {self.bytes_read / 1e6:.1f} MB, wrote {self.bytes_written / 1e6:.1f} MB, "
            f"{self.throughput_mb_s:.1f} MB/s, wall time {self.wall_time:.1f} s",
        ]
        lines += [f"{key}: {value}" for key, value in self.notes.items()]
        if self.warnings:
            lines.append("WARNING, quality control:")
            lines += [f"  {w}" for w in self.warnings]
        if self.failures:
            lines.append("failed tasks:")
            lines += [f"  {f}" for f in self.failures[:max_failures]]
            if len(self.failures) > max_failures:
                lines.append(f"  ... and {len(self.failures) - max_failures} more")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise :class:`TaskFailedError` listing the failures, if any."""
        if self.failures:
            raise TaskFailedError(
                f"{self.n_failed} of {self.n_tasks} {self.label} failed; completed work is recorded, "
                f"so running again retries only what is missing.\n{self.summary()}",
                report=self,
            )

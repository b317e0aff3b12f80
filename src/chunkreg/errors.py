"""Exceptions raised by chunkreg.

Every error chunkreg raises on purpose derives from :class:`ChunkregError`, which is a
:class:`ValueError`, so ``except ValueError`` keeps working for callers that expect the
scikit-image behaviour. Messages say what was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ChunkregError",
    "IncompatibleOutputError",
    "InputChangedError",
    "InputError",
    "OutputInUseError",
    "TaskFailedError",
]


class ChunkregError(ValueError):
    """Root of all errors raised deliberately by chunkreg."""


class InputError(ChunkregError):
    """An input array, path or parameter is unusable (shape, dtype, values, range)."""


class IncompatibleOutputError(ChunkregError):
    """An existing output does not match the run (shape, dtype, chunks or parameters).

    The output is left untouched; pass ``overwrite=True`` (``--overwrite``) to start afresh.
    """


class OutputInUseError(IncompatibleOutputError):
    """Another live run holds the output's lease; the output is left untouched."""


class InputChangedError(IncompatibleOutputError):
    """An input's content changed since the output was started, so it cannot be resumed.

    Pass ``overwrite=True`` (``--overwrite``) to start afresh from the current input.
    """


class TaskFailedError(ChunkregError):
    """One or more tiles/frames/chunks failed after all retries.

    Attributes
    ----------
    report : object
        The run report (see :class:`chunkreg.execution.RunReport`) with one entry per
        failed task: its key, region and the exception it raised.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report

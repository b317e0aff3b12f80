"""The tile engine: every workflow's stages run through here.

:class:`StageRunner` runs a workflow's stages (each a :func:`~chunkreg.execution.run_tasks`
call with its completion record or :class:`ResultSink`) and folds them into one report;
:class:`IndexedTasks` builds tasks on demand.
"""

from ._pyramid import add_output_pyramid, build_output_pyramid
from ._sink import ResultSink
from ._stages import StageRunner
from ._tasks import IndexedTasks

__all__ = [
    "IndexedTasks",
    "ResultSink",
    "StageRunner",
    "add_output_pyramid",
    "build_output_pyramid",
]

"""Execution: the one place chunkreg talks to :mod:`distributed`.

:func:`open_client` gives an embedded ``LocalCluster``, a connection to an existing scheduler,
the caller's own ``Client``, or in-process synchronous execution; :func:`run_tasks` runs
independent tasks on it with bounded parallelism, retries, progress and resume, and returns a
:class:`RunReport`.
"""

from ._client import (
    SYNCHRONOUS,
    WORKER_ALLOCATOR_ENV,
    default_n_workers,
    is_synchronous,
    open_client,
)
from ._config import client_from_config
from ._report import RunReport, TaskFailure
from ._runner import run_tasks

__all__ = [
    "SYNCHRONOUS",
    "WORKER_ALLOCATOR_ENV",
    "RunReport",
    "TaskFailure",
    "client_from_config",
    "default_n_workers",
    "is_synchronous",
    "open_client",
    "run_tasks",
]

"""Checking a plan's memory estimate against the workers' memory, before any task runs."""

from __future__ import annotations

from ..errors import InputError

__all__ = ["check_worker_memory", "worker_memory_limit"]


def worker_memory_limit(client) -> tuple[int | None, int]:
    """The smallest memory limit among ``client``'s workers, and their most threads.

    Returns ``(None, 1)`` when no worker has a limit. In-process (synchronous) runs are
    limited by this machine's memory.
    """
    from ..execution import is_synchronous

    if is_synchronous(client):
        from distributed.system import MEMORY_LIMIT

        return int(MEMORY_LIMIT), 1
    workers = client.scheduler_info().get("workers", {}).values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    threads = max((int(w.get("nthreads") or 1) for w in workers), default=1)
    limits = [m for m in limits if m > 0]
    return (min(limits) if limits else None), threads


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_worker_memory(task_memory: int, client, *, baseline: int | None = None) -> None:
    """Refuse a run whose largest task would not fit a worker's memory.

    Parameters
    ----------
    task_memory : int
        Estimated peak bytes of the largest task.
    client : distributed.Client or SYNCHRONOUS
        Where the tasks will run.
    baseline : int, optional
        Bytes a worker process holds before any task (default: the planner's estimate).

    Raises
    ------
    InputError
        If a worker's threads running such tasks at once need more than its memory limit.
    """
    if baseline is None:
        from ._planning import WORKER_BASELINE

        baseline = WORKER_BASELINE
    limit, threads = worker_memory_limit(client)
    if limit is None:
        return
    need = baseline + threads * task_memory
    if need > limit:
        raise InputError(
            f"each task needs about {_gib(task_memory)} (estimated), and a worker running "
            f"{threads} at once about {_gib(need)}, more than its memory limit of "
            f"{_gib(limit)}; use smaller tiles (tile=..., --tile) or workers with more memory. "
            "Nothing was written."
        )

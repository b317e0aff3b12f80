"""Where tasks run: an embedded LocalCluster, an existing scheduler, or the caller's Client.

This module and :mod:`._runner` are the only places in chunkreg that talk to
:mod:`distributed`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator

from ..errors import InputError

__all__ = ["SYNCHRONOUS", "active_client", "default_n_workers", "is_synchronous", "open_client"]

logger = logging.getLogger(__name__)


class _Synchronous:
    """Marker for running tasks one after another in this process (debugging, tiny jobs)."""

    def __repr__(self) -> str:
        return "SYNCHRONOUS"


SYNCHRONOUS = _Synchronous()


#: What the innermost :func:`open_client` of this context yielded (None outside one), so that
#: output creation can refuse process-local stores before writing anything.
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("chunkreg_client", default=None)


def active_client():
    """The client (or :data:`SYNCHRONOUS`) of the innermost :func:`open_client` now open.

    Returns
    -------
    distributed.Client, SYNCHRONOUS or None
        None outside any :func:`open_client`.
    """
    return _ACTIVE.get()


@contextlib.contextmanager
def _activate(client) -> Iterator:
    token = _ACTIVE.set(client)
    try:
        yield client
    finally:
        _ACTIVE.reset(token)


def is_synchronous(client) -> bool:
    """Whether ``client`` is the in-process synchronous marker.

    Parameters
    ----------
    client : object
        What :func:`open_client` yielded.

    Returns
    -------
    bool
    """
    return client is SYNCHRONOUS


#: Environment of the workers :func:`open_client` starts (glibc allocator settings), passed
#: through dask's config ``distributed.nanny.pre-spawn-environ``; put the same there in the
#: config of workers you start yourself for the same speed. distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
#: freezes glibc's mmap threshold at 128 KiB: every large numpy temporary then becomes a fresh,
#: page-faulting mmap. Measured here, allocating and filling 8 MB took 1.3 ms in such a worker
#: against 0.2 ms with these settings, and whole kernels ran 2-2.5x slower. Arrays up to 32 MiB
#: come from the heap, and up to 256 MiB of freed heap is kept for reuse before it is returned
#: to the system (so a worker's resident memory may exceed what its tasks hold by about that).
WORKER_ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
    "MALLOC_TRIM_THRESHOLD_": 256 * 2**20,
}


def _describe_limit(memory_limit) -> str:
    if not memory_limit:
        return "none"
    if isinstance(memory_limit, (int, float)):
        return f"{memory_limit / 2**30:.1f} GiB"
    return str(memory_limit)


def default_n_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def open_client(
    client=None,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | float | None = "auto",
    threads_per_worker: int = 1,
    dashboard_address: str | None = "127.0.0.1:0",
) -> Iterator:
    """Yield something :func:`run_tasks` can run on, and clean up what was started here.

    Parameters
    ----------
    client : distributed.Client, optional
        Used as is and left open.
    scheduler : str, optional
        Address of a running scheduler (``"tcp://host:8786"``), or ``"synchronous"`` to run
        every task in this process, in order (no cluster; useful for debugging and tests).
    n_workers : int, optional
        Workers of the embedded LocalCluster; default one per available core.
    memory_limit : str or float or None
        Per-worker memory limit of the embedded cluster, e.g. ``"4GiB"``. ``"auto"`` gives
        each worker an equal share of this machine's memory (all of it divided by
        ``n_workers``); ``None`` sets no limit.
    threads_per_worker : int
        Threads per embedded worker. One keeps kernels (which release the GIL only in parts)
        from competing; native thread pools are pinned to one thread in workers by
        distributed's ``nanny.pre-spawn-environ`` defaults.
    dashboard_address : str or None
        Where the embedded cluster's dashboard listens: by default on this machine only
        (``127.0.0.1``, any free port), so nobody else on the network can open it (the
        dashboard shows task details and has no authentication). ``":8787"`` listens on every
        interface; None starts no dashboard.

    Yields
    ------
    distributed.Client or SYNCHRONOUS
    """
    if client is not None and scheduler is not None:
        raise InputError("give either client or scheduler, not both.")
    if n_workers is not None and (isinstance(n_workers, bool) or int(n_workers) < 1):
        raise InputError(f"n_workers must be >= 1, got {n_workers!r}.")
    if client is not None:
        with _activate(client):
            yield client
        return
    if scheduler == "synchronous":
        logger.info("running every task in this process (scheduler='synchronous')")
        with _activate(SYNCHRONOUS):
            yield SYNCHRONOUS
        return

    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from exc
        except ValueError as exc:  # distributed cannot parse the address
            raise InputError(
                f"{scheduler!r} is not a Dask scheduler address ({exc}); give one such as "
                "tcp://host:8786, or 'synchronous'."
            ) from exc
        logger.info(
            "connected to the scheduler at %s (%d workers, dashboard %s)",
            scheduler,
            len(c.scheduler_info().get("workers", {})),
            c.dashboard_link,
        )
        try:
            with _activate(c):
                yield c
        finally:
            c.close()
        return
    if n_workers is not None and n_workers < 1:
        raise InputError(f"n_workers must be >= 1, got {n_workers}.")
    n = n_workers or default_n_workers()
    if memory_limit == "auto":
        from distributed.system import MEMORY_LIMIT

        memory_limit = MEMORY_LIMIT // n
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ALLOCATOR_ENV}
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=n,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,  # any free port: never clash with another
            memory_limit=memory_limit,
        ) as cluster,
        Client(cluster) as c,
    ):
        logger.info(
            "started a local cluster: %d workers x %d thread(s), memory limit %s each, "
            "dashboard %s",
            n,
            threads_per_worker,
            _describe_limit(memory_limit),
            c.dashboard_link,
        )
        with _activate(c):
            yield c

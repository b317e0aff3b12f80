"""Choosing the cluster from a workflow's TOML configuration.

A ``[cluster]`` table names one of:

- ``kind = "local"`` (default): an embedded LocalCluster; ``workers``, ``memory_limit``.
- ``kind = "address"``: an existing scheduler; ``address = "tcp://host:8786"``.
- ``kind = "synchronous"``: every task in this process (debugging).
- ``kind = "slurm"``: a dask-jobqueue ``SLURMCluster``; ``jobs`` (how many batch jobs to
  start), ``start_timeout`` (seconds to wait for the first worker; default forever) and a
  ``[cluster.slurm]`` table passed to ``SLURMCluster`` (``cores``, ``memory``,
  ``processes``, ``queue``, ``account``, ``walltime``, ``job_extra_directives``...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from ..errors import InputError
from ._client import open_client

__all__ = ["client_from_config"]

_KINDS = ("local", "address", "synchronous", "slurm")


@contextlib.contextmanager
def client_from_config(cluster: Mapping | None) -> Iterator:
    """Yield a client (or ``SYNCHRONOUS``) described by a ``[cluster]`` config table.

    Parameters
    ----------
    cluster : mapping or None
        The parsed ``[cluster]`` table; None or empty means an embedded LocalCluster.

    Yields
    ------
    distributed.Client or SYNCHRONOUS
    """
    cluster = dict(cluster or {})
    kind = cluster.pop("kind", "local")
    if kind not in _KINDS:
        raise InputError(f"[cluster] kind must be one of {_KINDS}, got {kind!r}.")
    if kind == "local":
        unknown = set(cluster) - {"workers", "memory_limit"}
        if unknown:
            raise InputError(f"[cluster] keys {sorted(unknown)} do not apply to kind = 'local'.")
        with open_client(
            n_workers=cluster.get("workers"), memory_limit=cluster.get("memory_limit", "auto")
        ) as c:
            yield c
    elif kind == "address":
        if "address" not in cluster:
            raise InputError("[cluster] kind = 'address' needs address = 'tcp://host:port'.")
        with open_client(scheduler=cluster["address"]) as c:
            yield c
    elif kind == "synchronous":
        with open_client(scheduler="synchronous") as c:
            yield c
    else:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise InputError(
                "kind = 'slurm' needs dask-jobqueue: pip install dask-jobqueue"
            ) from exc
        from distributed import Client

        with SLURMCluster(**cluster.get("slurm", {})) as slurm:
            slurm.scale(jobs=int(cluster.get("jobs", 1)))
            with Client(slurm) as client:
                # Batch jobs start when the queue allows; wait for the first worker so runs
                # size their task window to a live cluster (run_tasks keeps resizing it).
                client.wait_for_workers(1, timeout=cluster.get("start_timeout"))
                yield client

"""Choosing the cluster from a workflow's TOML configuration.

A ``[cluster]`` table names one of:

- ``kind = "local"`` (default): an embedded LocalCluster; ``workers``, ``memory_limit``.
- ``kind = "address"``: an existing scheduler; ``address = "tcp://host:8786"``.
- ``kind = "synchronous"``: every task in this process (debugging).
- ``kind = "slurm"``: a dask-jobqueue ``SLURMCluster``; ``jobs`` (how many batch jobs to
  start, default 1) or ``workers`` (how many workers: jobs enough for them), ``start_timeout``
  (how long to wait for the first worker, seconds or a string such as ``"30min"``; default
  :data:`DEFAULT_START_TIMEOUT`) and a ``[cluster.slurm]`` table passed to ``SLURMCluster``
  (``cores``, ``memory``, ``processes``, ``queue``, ``account``, ``walltime``,
  ``job_extra_directives``...).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Mapping

from ..errors import InputError
from ._client import _activate, open_client

__all__ = ["DEFAULT_START_TIMEOUT", "client_from_config"]

logger = logging.getLogger(__name__)

_KINDS = ("local", "address", "synchronous", "slurm")
#: Seconds a ``kind = "slurm"`` cluster waits for its first worker before giving up: long
#: enough for a busy queue's usual wait, short enough that a cluster whose jobs can never
#: start (no ``sbatch``, a wrong partition or account) fails instead of hanging.
DEFAULT_START_TIMEOUT = 600.0


def _seconds(value) -> float:
    from dask.utils import parse_timedelta

    try:
        seconds = parse_timedelta(value, default="seconds")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"[cluster] start_timeout must be seconds or a duration such as '30min', got {value!r}."
        ) from exc
    if seconds is None or seconds <= 0:
        raise InputError(f"[cluster] start_timeout must be > 0, got {value!r}.")
    return float(seconds)


@contextlib.contextmanager
def _jobqueue_client(cluster: dict) -> Iterator:
    """A dask-jobqueue SLURMCluster scaled to ``jobs`` or ``workers``, with a bounded wait."""
    unknown = set(cluster) - {"jobs", "workers", "start_timeout", "slurm"}
    if unknown:
        raise InputError(f"[cluster] keys {sorted(unknown)} do not apply to kind = 'slurm'.")
    if "jobs" in cluster and "workers" in cluster:
        raise InputError(
            "[cluster] give jobs (batch jobs) or workers (Dask workers) for kind = 'slurm', "
            "not both."
        )
    for key in ("jobs", "workers"):
        if key in cluster and (isinstance(cluster[key], bool) or int(cluster[key]) < 1):
            raise InputError(f"[cluster] {key} must be >= 1, got {cluster[key]!r}.")
    timeout = _seconds(cluster.get("start_timeout", DEFAULT_START_TIMEOUT))
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise InputError("kind = 'slurm' needs dask-jobqueue: pip install dask-jobqueue") from exc
    if shutil.which("sbatch") is None:
        raise InputError(
            "kind = 'slurm' submits batch jobs with sbatch, which is not on this machine's PATH; "
            "run the script on a machine that can submit SLURM jobs (a login node), or use "
            "kind = 'local' or 'address'."
        )
    from distributed import Client

    with SLURMCluster(**cluster.get("slurm", {})) as slurm:
        if "workers" in cluster:
            slurm.scale(int(cluster["workers"]))
            wanted = f"{int(cluster['workers'])} workers"
        else:
            slurm.scale(jobs=int(cluster.get("jobs", 1)))
            wanted = f"{int(cluster.get('jobs', 1))} batch jobs"
        logger.info(
            "asked SLURM for %s; waiting up to %.0f s for the first worker", wanted, timeout
        )
        with Client(slurm) as client:
            # Batch jobs start when the queue allows; wait for the first worker so runs
            # size their task window to a live cluster (run_tasks keeps resizing it).
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise InputError(
                    f"no Dask worker joined the SLURM cluster within {timeout:.0f} s "
                    f"([cluster] start_timeout; asked for {wanted}). Check the jobs with squeue "
                    "and their logs (the [cluster.slurm] log_directory), and that the queue, "
                    "account and resources are valid; raise start_timeout if the queue is "
                    "just slow."
                ) from None
            with _activate(client):
                yield client


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
        with _jobqueue_client(cluster) as c:
            yield c

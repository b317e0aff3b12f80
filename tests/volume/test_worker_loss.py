"""A worker process killed in the middle of a run: its tiles are rescheduled, the output is right."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose

from chunkreg.volume import compute_flow

from .kernels import box_flow, slow_box_flow


def _kill_one_worker_when_progressing(client, out, n_tasks, pids, killed, timeout=60.0):
    """Wait until the run has recorded some (not all) tiles, then SIGKILL one worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = "_scratch/0/_completion/pieces"  # the tile stage (before the blend)
            done = int(zarr.open_array(str(out), path=record, mode="r")[:].sum())
        except (FileNotFoundError, KeyError, ValueError):
            done = 0
        if 0 < done < n_tasks:
            victim = pids[0]
            os.kill(victim, signal.SIGKILL)
            killed.append((victim, done))
            return
        time.sleep(0.02)


@pytest.mark.cluster
def test_run_survives_a_killed_worker(tmp_path, pair2d, cluster_client):
    out = tmp_path / "out.zarr"
    pids = sorted(cluster_client.run(os.getpid).values())
    assert len(pids) == 2
    killed = []
    n_tasks = 20  # tile (40, 48) on 192 x 160
    watcher = threading.Thread(
        target=_kill_one_worker_when_progressing,
        args=(cluster_client, out, n_tasks, pids, killed),
        daemon=True,
    )
    watcher.start()
    report = compute_flow(
        pair2d.reference,
        pair2d.moving,
        out,
        method=slow_box_flow,
        tile=(40, 48),
        overlap=6,  # blended across 3 voxels: the other 3 cover the kernel's reach
        radius=3,
        levels=1,
        delay=0.25,
        client=cluster_client,
        progress=False,
    )
    watcher.join(timeout=5)
    assert killed, "the run finished before a worker could be killed"
    victim, done_before = killed[0]
    assert 0 < done_before < n_tasks
    report.raise_if_failed()
    assert (report.n_done, report.n_skipped) == (2 * n_tasks, 0)  # tiles, then their blend
    flow = zarr.open_array(str(out), path="flow", mode="r")[:]
    assert_allclose(flow, box_flow(pair2d.ref, pair2d.mov, radius=3), rtol=1e-5, atol=1e-6)
    assert not np.isnan(flow).any()
    # The nanny replaced the killed process; the cluster is whole again for later tests.
    cluster_client.wait_for_workers(2, timeout=60)
    assert victim not in cluster_client.run(os.getpid).values()

import io
import os
import time

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from chunkreg.errors import InputError, TaskFailedError
from chunkreg.execution import SYNCHRONOUS, RunReport, open_client, run_tasks
from chunkreg.execution._progress import Progress
from chunkreg.io import CompletionRecord, open_output_group


def square(x):
    return {"value": x * x, "bytes_read": 10, "bytes_written": 5, "seconds": 0.01}


def fail_on_three(x):
    if x == 3:
        raise RuntimeError("tile 3 is cursed")
    return {"value": x}


def fail_once_then_work(path):
    """Fails the first time it is called for a given marker path, then succeeds."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError("transient")
    return {"value": 1}


def test_synchronous_results_and_totals():
    got = {}
    with open_client(scheduler="synchronous") as client:
        assert client is SYNCHRONOUS
        report = run_tasks(
            square,
            list(range(5)),
            client=client,
            progress=False,
            on_result=lambda i, r: got.update({i: r["value"]}),
        )
    assert got == {i: i * i for i in range(5)}
    assert (report.n_done, report.n_skipped, report.n_failed) == (5, 0, 0)
    assert report.bytes_read == 50 and report.bytes_written == 25
    assert report.task_seconds == pytest.approx(0.05)
    assert "5 done" in report.summary()


def test_failure_reported_not_raised_until_asked():
    report = run_tasks(
        fail_on_three,
        list(range(6)),
        client=SYNCHRONOUS,
        progress=False,
        retries=1,
        describe=lambda t: f"region {t}",
    )
    assert report.n_done == 5 and report.n_failed == 1
    (failure,) = report.failures
    assert failure.index == 3 and failure.description == "region 3"
    assert "RuntimeError: tile 3 is cursed" in failure.error
    assert "cursed" in report.summary()
    with pytest.raises(TaskFailedError, match="1 of 6 tiles failed") as info:
        report.raise_if_failed()
    assert info.value.report is report


def test_retries_recover_transient_failure(tmp_path):
    tasks = [str(tmp_path / f"m{i}") for i in range(3)]
    report = run_tasks(fail_once_then_work, tasks, client=SYNCHRONOUS, progress=False, retries=1)
    assert report.n_done == 3 and report.n_failed == 0
    tasks = [str(tmp_path / f"n{i}") for i in range(2)]
    report = run_tasks(fail_once_then_work, tasks, client=SYNCHRONOUS, progress=False, retries=0)
    assert report.n_failed == 2


def test_resume_skips_recorded_tasks(tmp_path):
    group = open_output_group(tmp_path / "o.zarr", signature={})
    record = CompletionRecord(group, "tiles", 6)
    report = run_tasks(
        fail_on_three, list(range(6)), client=SYNCHRONOUS, record=record, progress=False, retries=0
    )
    assert_array_equal(record.done_indices(), [0, 1, 2, 4, 5])
    calls = []
    report = run_tasks(
        lambda x: calls.append(x), list(range(6)), client=SYNCHRONOUS, record=record, progress=False
    )
    assert calls == [3]
    assert (report.n_done, report.n_skipped) == (1, 5)
    assert record.complete


def test_bad_arguments():
    with pytest.raises(InputError, match="retries"):
        run_tasks(square, [1], client=SYNCHRONOUS, retries=-1)
    group_free_record = type("R", (), {"n_tasks": 3})()
    with pytest.raises(InputError, match="completion record has 3 tasks"):
        run_tasks(square, [1], client=SYNCHRONOUS, record=group_free_record)
    with (
        pytest.raises(InputError, match="either client or scheduler"),
        open_client(SYNCHRONOUS, scheduler="tcp://x:1"),
    ):
        pass


def test_progress_line_in_logs():
    stream = io.StringIO()
    bar = Progress(4, "frames", stream=stream, log_interval=0.0)
    for _ in range(4):
        bar.update()
    bar.close()
    lines = stream.getvalue().strip().splitlines()
    assert lines[-1].startswith("frames: 4/4 [########################]")


def test_progress_heartbeat_between_completions():
    """A task that runs for long still shows elapsed time and tasks in flight."""
    stream = io.StringIO()
    bar = Progress(3, "tiles", stream=stream, log_interval=60.0, heartbeat=0.05, running=lambda: 2)
    bar.update()  # the first completion draws the line
    time.sleep(0.4)
    bar.close()
    lines = stream.getvalue().strip().splitlines()
    assert lines[0].startswith("tiles: 1/3 [########................]")
    beats = lines[1:]
    assert len(beats) >= 3
    assert all(b.startswith("tiles: 1/3") and b.endswith("running 2") for b in beats)
    assert "elapsed 0s" in beats[-1]
    n = len(stream.getvalue())
    time.sleep(0.15)
    assert len(stream.getvalue()) == n  # closed: the heartbeat has stopped


def test_report_throughput():
    r = RunReport("tiles", 1, bytes_read=3_000_000, bytes_written=1_000_000, wall_time=2.0)
    assert r.throughput_mb_s == pytest.approx(2.0)


@pytest.mark.cluster
def test_local_cluster_bounded_in_flight(tmp_path):
    group = open_output_group(tmp_path / "o.zarr", signature={})
    record = CompletionRecord(group, "tiles", 40)
    values = np.zeros(40)

    def keep(i, r):
        values[i] = r["value"]

    with open_client(n_workers=2) as client:
        assert len(client.nthreads()) == 2
        report = run_tasks(
            square,
            list(range(40)),
            client=client,
            record=record,
            max_in_flight=3,
            progress=False,
            on_result=keep,
        )
        failing = run_tasks(fail_on_three, list(range(5)), client=client, progress=False, retries=1)
    assert report.n_done == 40 and report.ok
    assert_array_equal(values, np.arange(40) ** 2)
    assert record.complete
    assert failing.n_failed == 1 and failing.failures[0].index == 3


def test_skipped_by_the_caller_is_counted():
    report = run_tasks(square, [1, 2], client=SYNCHRONOUS, progress=False, skipped=3)
    assert (report.n_tasks, report.n_done, report.n_skipped) == (5, 2, 3)
    with pytest.raises(InputError, match="skipped"):
        run_tasks(square, [1], client=SYNCHRONOUS, skipped=-1)


def _malloc_env():
    return {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}


@pytest.mark.cluster
def test_embedded_workers_keep_large_temporaries_on_the_heap():
    from chunkreg.execution._client import WORKER_ALLOCATOR_ENV

    with open_client(n_workers=1) as client:
        env = client.submit(_malloc_env, pure=False).result()
    assert env == {k: str(v) for k, v in WORKER_ALLOCATOR_ENV.items()}

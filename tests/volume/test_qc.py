"""Quality control: seam metric on known fields, the qc group, summary and figure."""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from chunkreg.errors import InputError
from chunkreg.testing import smooth_displacement
from chunkreg.tiling import TileGrid
from chunkreg.volume._qc import (
    combine_seam_sums,
    plot_qc,
    read_qc,
    seam_metric,
    seam_sums,
    summarise_qc,
    write_qc,
)


def stepped(flow, tile, step):
    """Add a different constant offset to every tile: a field with seams at tile borders."""
    rng = np.random.default_rng(0)
    out = flow.copy()
    grid = TileGrid(flow.shape[1:], tile, (0,) * (flow.ndim - 1))
    for t in grid:
        out[(slice(None), *t.core)] += rng.uniform(-step, step, (flow.shape[0],) + (1,) * len(tile))
    return out


@pytest.mark.parametrize(("shape", "tile"), [((128, 96), (32, 32)), ((48, 40, 36), (16, 16, 16))])
def test_smooth_field_scores_one_and_stepped_field_more(shape, tile):
    flow = smooth_displacement(shape, amplitude=2, seed=1)
    assert seam_metric(flow, tile) == pytest.approx(1.0, abs=0.1)
    assert seam_metric(flow, TileGrid(shape, tile, (0,) * len(shape))) == seam_metric(flow, tile)
    assert seam_metric(stepped(flow, tile, 0.2), tile) > 1.1
    assert seam_metric(stepped(flow, tile, 1.0), tile) > 2.0


def test_linear_anisotropic_field_scores_exactly_one():
    y, x = np.mgrid[:64, :80].astype(np.float64)
    flow = np.stack([0.3 * y, 0.01 * x])  # steep along y, nearly flat along x
    assert seam_metric(flow, (16, 20)) == pytest.approx(1.0, abs=1e-9)


def test_degenerate_fields():
    assert seam_metric(np.zeros((2, 32, 32)), (8, 8)) == 1.0  # constant: no seams
    assert np.isnan(seam_metric(np.zeros((2, 32, 32)), (64, 64)))  # one tile: no borders
    jump = np.zeros((1, 32))
    jump[0, 16:] = 1.0  # changes only across the border
    assert seam_metric(jump, (16,)) > 100


def test_per_tile_sums_add_up_to_the_whole_field():
    shape, tile = (37, 50, 23), (16, 16, 8)
    flow = stepped(smooth_displacement(shape, amplitude=3, seed=2), tile, 0.3)
    whole = seam_sums(flow, tile)
    total = np.zeros_like(whole)
    # regions of another (ragged) grid, each grown by one voxel below and two above
    for t in TileGrid(shape, (10, 16, 9), (0, 0, 0)):
        region = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 2, n))
            for s, n in zip(t.core, shape, strict=True)
        )
        total += seam_sums(
            flow[(slice(None), *region)],
            tile,
            origin=[s.start for s in region],
            core=t.core,
            shape=shape,
        )
    assert_allclose(total, whole)
    assert whole[2].tolist() == [2 * 50 * 23, 3 * 37 * 23, 2 * 37 * 50]  # border pairs per axis
    assert combine_seam_sums(total) == pytest.approx(seam_metric(flow, tile))


def test_smooth_field_with_gradient_peaking_at_borders_scores_one():
    # a sine whose slope is largest exactly at the tile borders: still no seam
    x = np.arange(128, dtype=np.float64)
    flow = np.sin(2 * np.pi * (x - 32) / 64)[None] * 3
    assert seam_metric(flow, (32,)) == pytest.approx(1.0, abs=0.01)


def test_bad_flow_shape():
    with pytest.raises(InputError, match="ndim"):
        seam_metric(np.zeros((3, 8, 8)), (4, 4))


@pytest.fixture
def output(tmp_path):
    group = zarr.open_group(tmp_path / "out.zarr", mode="w")
    before = np.array([[0.1, 0.2, 0.3], [0.2, 0.1, 0.0]])
    after = np.array([[0.9, 0.4, 0.95], [0.8, np.nan, 0.7]])
    reliable = np.array([[True, False, True], [True, False, True]])
    write_qc(
        group,
        label="blocks",
        tile_shape=(32, 32),
        ncc_before=before,
        ncc_after=after,
        seam=1.03,
        extra={"reliable": reliable},
    )
    return tmp_path / "out.zarr", before, after, reliable


def test_write_and_read_qc(output):
    path, before, after, reliable = output
    qc = read_qc(path)
    assert_allclose(qc["ncc_before"], before, rtol=1e-6)
    assert_allclose(qc["ncc_after"], after, rtol=1e-6)
    assert qc["ncc_after"].dtype == np.float32
    assert_array_equal(qc["reliable"], reliable)
    assert qc["attrs"] == {"label": "blocks", "tile_shape": [32, 32], "seam_metric": 1.03}


def test_summary_lists_worst_tiles_first(output):
    path, *_ = output
    text = summarise_qc(path, worst=3)
    lines = text.splitlines()
    worst = lines.index("worst blocks (lowest NCC after):")
    assert lines[worst + 1].startswith("  (0, 1): after 0.400, before 0.200, unreliable")
    assert lines[worst + 2].startswith("  (1, 2): after 0.700")
    assert lines[worst + 3].startswith("  (1, 0): after 0.800")
    assert "6 in a grid of (2, 3) of (32, 32) voxels, 5 measured" in text
    assert "median 0.800, min 0.400" in text
    assert "improved in 5 of 5 blocks" in text
    assert "reliable blocks: 4 of 6" in text
    assert "seam metric: 1.030 (no seams" in text


def test_summary_flags_seams(tmp_path):
    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    write_qc(group, label="tiles", tile_shape=(64,), seam=1.8)
    assert "SEAMS" in summarise_qc(tmp_path / "s.zarr")


def test_missing_qc_is_a_clear_error(tmp_path):
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(InputError, match="no quality-control group"):
        summarise_qc(tmp_path / "plain.zarr")
    zarr.create_array(tmp_path / "a.zarr", shape=(2,), dtype="f4")
    with pytest.raises(InputError, match="not a chunkreg output group"):
        read_qc(tmp_path / "a.zarr")
    with pytest.raises(InputError, match="not a chunkreg output group"):
        read_qc(tmp_path / "missing.zarr")


def test_plot_writes_a_png(output, tmp_path):
    import matplotlib.image

    path, *_ = output
    plot_qc(path, tmp_path / "qc.png")
    assert (tmp_path / "qc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(tmp_path / "qc.png")
    assert image.shape[1] == 1200 and image.shape[0] == 360  # 12 x 3.6 inches at 100 dpi


def test_worker_memory_check_compares_the_largest_task_with_the_limit():
    from chunkreg.errors import InputError
    from chunkreg.volume._memory import check_worker_memory, worker_memory_limit

    class Client:
        def __init__(self, limits, threads=1):
            self.workers = {
                str(i): {"memory_limit": m, "nthreads": threads} for i, m in enumerate(limits)
            }

        def scheduler_info(self):
            return {"workers": self.workers}

    gib = 2**30
    assert worker_memory_limit(Client([4 * gib, 2 * gib], 2)) == (2 * gib, 2)
    assert worker_memory_limit(Client([0])) == (None, 1)  # no limit set
    check_worker_memory(gib, Client([2 * gib]), baseline=0)
    check_worker_memory(100 * gib, Client([0]))  # unlimited workers: nothing to check
    with pytest.raises(InputError, match=r"a worker running 2 at once about 2\.0 GiB, more than"):
        check_worker_memory(gib, Client([int(1.5 * gib)], threads=2), baseline=0)


def test_run_report_status_and_warnings_in_the_summary():
    from chunkreg.cli._common import finish
    from chunkreg.execution import RunReport

    report = RunReport(label="tiles", n_tasks=1, n_done=1)
    assert report.status == "ok" and finish(report, strict=True) == 0
    report.warnings.append("registration made the images less similar: ...")
    assert report.status == "warning"
    assert "WARNING, quality control:\n  registration made" in report.summary()
    assert finish(report) == 0 and finish(report, strict=True) == 3
    report.n_failed = 1
    assert report.status == "failed" and finish(report, strict=True) == 1

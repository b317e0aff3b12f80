"""compute_flow on anisotropic volumes: levels halve the fine axes first, per-axis halos and
windows from the input's voxel size; flows stay in voxels with the voxel size recorded."""

import numpy as np
import pytest
import zarr

import chunkreg
from chunkreg import optical_flow_ilk
from chunkreg.io import Space, create_array, write_space
from chunkreg.registration._multiscale import (
    initial_flow,
    initial_flow_points,
    upsample_flow_region,
)
from chunkreg.testing import sampled_scene_pair
from chunkreg.volume import plan_flow

SYNC = {"scheduler": "synchronous", "progress": False}
NM = {"z": "nanometer", "y": "nanometer", "x": "nanometer"}
EM = Space(("z", "y", "x"), (50.0, 4.0, 4.0), (0.0, 0.0, 0.0), NM)
EXTENT = (800.0, 256.0, 256.0)  # 16 sections of 64 x 64 pixels
SCENE = {"grain": (60.0, 10.0, 10.0), "amplitude": (40.0, 10.0, 10.0), "seed": 1}
RUN = {"tile": (16, 32, 32), "levels": 2, "radius": 3}


def _write(path, data, chunks=(8, 32, 32)):
    group = zarr.open_group(str(path), mode="w")
    create_array(group, name="0", shape=data.shape, dtype=data.dtype, chunks=chunks,
                 dimension_names=EM.axes)[...] = data  # fmt: skip
    write_space(group, ["0"], EM)
    return path


def _error_nm(flow, truth):
    nm = (np.asarray(flow, np.float64) - truth) * np.reshape(EM.scale, (3, 1, 1, 1))
    return float(np.linalg.norm(nm, axis=0).mean())


@pytest.fixture(scope="module")
def em_pair(tmp_path_factory):
    """The 4 x 4 x 50 nm pair as OME-Zarr (scale recorded) and its flow, anisotropy-aware."""
    folder = tmp_path_factory.mktemp("em")
    ref, mov, truth = sampled_scene_pair(EXTENT, EM.scale, **SCENE)
    r, m = _write(folder / "ref.zarr", ref), _write(folder / "mov.zarr", mov)
    out = folder / "aware.zarr"
    assert chunkreg.compute_flow(r, m, out, **RUN, **SYNC).ok  # spacing from the OME-Zarr scale
    return r, m, truth, out


def test_anisotropic_plan(em_pair):
    r, m, _, _ = em_pair
    plan = plan_flow(r, m, **RUN)  # spacing from the inputs' OME-Zarr scale
    assert plan.spacing == EM.scale
    assert [lp.voxel_factors for lp in plan.levels] == [(1, 1, 1), (1, 2, 2)]
    # iLK radius 3 along y, x is 12 nm: 1 section (at least one voxel) along z
    assert plan.grid.depth == (5, 10, 10)  # 2*radius+2 + residual motion of 2 px (1 section)
    text = plan.describe()
    assert "voxel 50 x 8 x 8 = 1 x 2 x 2 input voxels" in text and "halo (5, 10, 10)" in text
    assert "halo (depth): (5, 10, 10) (auto: 2*radius_axis+2+motion, per axis" in text
    assert plan.signature()["spacing"] == [50.0, 4.0, 4.0]


def test_anisotropic_flow_against_the_isotropic_scene(em_pair):
    _, _, truth, out = em_pair
    flow = zarr.open_array(str(out), path="flow")
    aware_err = _error_nm(flow[...], truth)
    # the same scene on an isotropic 8 nm grid, in memory
    iref, imov, itruth = sampled_scene_pair(EXTENT, (8.0,) * 3, **SCENE)
    iso = optical_flow_ilk(iref, imov, radius=3)
    iso_err = float(np.linalg.norm((iso - itruth) * 8.0, axis=0).mean())
    # measured: 3.2 nm anisotropy-aware, 3.4 nm isotropic (of up to 40 nm)
    assert aware_err < 4.0 and iso_err < 4.0
    assert abs(aware_err - iso_err) < 1.5
    # flows in voxels, the voxel size and the levels' grids recorded
    assert flow.attrs["units"] == {"values": "voxel"}
    assert flow.attrs["voxel_size"]["z"] == [50.0, "nanometer"]
    assert flow.attrs["spacing"] == [50.0, 4.0, 4.0]
    coarse = zarr.open_array(str(out), path="coarse/1")
    assert coarse.shape == (3, 16, 32, 32) and coarse.attrs["spacing"] == [50.0, 8.0, 8.0]
    assert "1 x 2 x 2 input voxels" in coarse.attrs["units"]["values"]


def test_voxel_blind_flow_is_worse(em_pair, tmp_path):
    r, m, truth, out = em_pair
    blind = tmp_path / "blind.zarr"
    assert chunkreg.compute_flow(r, m, blind, spacing=1, **RUN, **SYNC).ok
    aware_err = _error_nm(zarr.open_array(str(out), path="flow")[...], truth)
    blind_err = _error_nm(zarr.open_array(str(blind), path="flow")[...], truth)
    assert zarr.open_array(str(blind), path="coarse/1").shape == (3, 8, 32, 32)  # z halved
    assert "spacing" not in zarr.open_array(str(blind), path="flow").attrs
    # measured: 3.2 nm anisotropy-aware, 4.8 nm blind
    assert aware_err < 0.8 * blind_err


def test_initial_flow_keeps_the_axes_a_level_did_not_halve():
    """Upsampling a coarser flow of step (1, 2, 2): values along z are kept (not doubled, not
    resampled), y and x doubled; the values at a few points equal the dense computation."""
    rng = np.random.default_rng(0)
    fine, coarse, step = (10, 40, 36), (10, 20, 18), (1, 2, 2)
    values = rng.standard_normal((3, *coarse)).astype(np.float32)

    def read(region):
        return values[(slice(None), *region)]

    flat = np.broadcast_to(np.float32([1.0, 1.0, 1.0]).reshape(3, 1, 1, 1), (3, *coarse))
    up = upsample_flow_region(flat, (0, 0, 0), tuple(slice(0, n) for n in fine), coarse, step)
    np.testing.assert_allclose(up[:, 0, 0, 0], [1.0, 2.0, 2.0])
    z_only = np.zeros((3, *coarse), np.float32)
    z_only[0] = np.arange(10, dtype=np.float32).reshape(10, 1, 1)
    up = upsample_flow_region(z_only, (0, 0, 0), tuple(slice(0, n) for n in fine), coarse, step)
    np.testing.assert_allclose(up[0, :, 7, 7], np.arange(10))  # z kept voxel for voxel
    region = (slice(2, 9), slice(5, 30), slice(0, 36))
    dense = initial_flow(read, region, fine, coarse, step)
    points = [np.array([0, 3, 6]), np.array([1, 10, 24]), np.array([0, 35])]
    sparse = initial_flow_points(read, region, points, fine, coarse, step)
    np.testing.assert_allclose(sparse, dense[(slice(None), *np.ix_(*points))], atol=1e-5)


def test_em_levels_wait_for_the_sections(tmp_path):
    """Planning only: a 64-section 4 x 4 x 50 nm volume halves y, x three times before z."""
    shape = (64, 2048, 2048)
    for name in ("ref.zarr", "mov.zarr"):
        group = zarr.open_group(str(tmp_path / name), mode="w")
        create_array(group, name="0", shape=shape, dtype="uint8", chunks=(32, 256, 256),
                     dimension_names=EM.axes)  # fmt: skip
        write_space(group, ["0"], EM)
    plan = plan_flow(tmp_path / "ref.zarr", tmp_path / "mov.zarr", levels=5, allow_sparse=True)
    assert [lp.shape for lp in plan.levels] == [
        (64, 2048, 2048), (64, 1024, 1024), (64, 512, 512), (64, 256, 256), (32, 128, 128),
    ]  # fmt: skip
    # finer levels' voxels are nearer isotropic: the z halo grows towards the y, x one
    assert [lp.grid.depth[0] for lp in plan.levels[:4]] == [5, 5, 7, 12]
    assert all(lp.grid.depth[1:] == (18, 18) for lp in plan.levels[:4])
    ignored = plan_flow(tmp_path / "ref.zarr", tmp_path / "mov.zarr", levels=3,
                        allow_sparse=True, spacing=1)  # fmt: skip
    assert ignored.spacing is None and ignored.levels[1].shape == (32, 1024, 1024)


def test_cli_spacing(tmp_path, capsys):
    from chunkreg.cli import main

    data = np.zeros((16, 64, 64), np.float32)
    r = zarr.create_array(str(tmp_path / "r.zarr"), data=data, chunks=(16, 32, 32))
    assert main(["flow", r.store.root.as_posix(), r.store.root.as_posix(), str(tmp_path / "o"),
                 "--spacing", "50,4,4", "--levels", "2", "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "voxel size (spacing): (50.0, 4.0, 4.0)" in out
    assert "level 1 (16 x 32 x 32; voxel 50 x 8 x 8 = 1 x 2 x 2 input voxels" in out
    assert not (tmp_path / "o").exists()


def test_recorded_scale_is_followed_only_when_comparable(tmp_path):
    data = np.zeros((16, 64, 64), np.float32)
    mixed = Space(("z", "y", "x"), (2.0, 500.0, 500.0), (0.0,) * 3,
                  {"z": "micrometer", "y": "nanometer", "x": "nanometer"})  # fmt: skip
    series = Space(("t", "y", "x"), (0.1, 0.4, 0.4), (0.0,) * 3, {"t": "second"})
    for name, space in (("mixed", mixed), ("series", series)):
        group = zarr.open_group(str(tmp_path / name), mode="w")
        create_array(group, name="0", shape=data.shape, dtype=data.dtype, chunks=data.shape,
                     dimension_names=space.axes)[...] = data  # fmt: skip
        write_space(group, ["0"], space)
        assert plan_flow(tmp_path / name, tmp_path / name).spacing is None
        given = plan_flow(tmp_path / name, tmp_path / name, spacing=(2000, 500, 500))
        assert given.spacing == (2000.0, 500.0, 500.0)


def test_workflow_toml_takes_spacing(tmp_path):
    import importlib.util
    from pathlib import Path

    from chunkreg.errors import InputError

    path = Path(__file__).resolve().parents[2] / "workflows" / "register_volumes.py"
    spec = importlib.util.spec_from_file_location("wf_register_volumes_spacing", path)
    volumes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(volumes)
    config = {"input": {"reference": "r.zarr", "moving": "m.zarr"},
              "registration": {"method": "ilk", "spacing": [50, 4, 4]},
              "output": {"flow": "f.zarr"}}  # fmt: skip
    assert volumes._tables(config)["registration"]["spacing"] == [50, 4, 4]
    assert volumes._pipeline_tables({**config, "pipeline": {"steps": ["flow"]}})
    with pytest.raises(InputError, match="spacing"):
        volumes._tables({**config, "registration": {"method": "ilk", "spacing": "50,4,4"}})
    with pytest.raises(InputError, match="not to method = 'blockwise'"):
        volumes._tables(
            {
                **config,
                "registration": {"method": "blockwise", "spacing": 1.0},
                "blockwise": {"block": 16},
                "output": {"flow": "f", "blocks": "b"},
            }
        )

"""Every script in workflows/ runs on its example config against generated small data."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
import zarr
from numpy.testing import assert_array_equal

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"


def run_script(name: str, cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    config = config or WORKFLOWS / f"{name}.example.toml"
    result = subprocess.run(
        [sys.executable, str(WORKFLOWS / f"{name}.py"), str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def synchronous_config(name: str, folder: Path, *replacements: tuple[str, str]) -> Path:
    """The example config of ``name`` run in-process (``[cluster] kind = "synchronous"``).

    ``register_volumes`` runs its example config unchanged first, on the embedded LocalCluster
    the examples ask for (the ``[cluster]`` table is the same code in every script); the
    other runs use this variant, so the suite does not start a cluster for each. The time
    series and the mosaic run on a LocalCluster in tests/timeseries and tests/stitching.
    """
    text = (WORKFLOWS / f"{name}.example.toml").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    text, n = re.subn(r'^kind = "local"(.*)\nworkers = \d+\n', r'kind = "synchronous"\1\n', text,
                      flags=re.M)  # fmt: skip
    assert n == 1, f"{name}: no local [cluster] table to replace"
    config = folder / f"{name}.sync.toml"
    config.write_text(text)
    return config


def test_every_script_has_an_example_config():
    scripts = {p.stem for p in WORKFLOWS.glob("*.py")}
    configs = {p.name.removesuffix(".example.toml") for p in WORKFLOWS.glob("*.example.toml")}
    assert scripts <= configs, f"scripts without example config: {sorted(scripts - configs)}"


def test_convert_tiff_stack(tmp_path):
    stack = np.random.default_rng(0).integers(0, 60000, size=(3, 300, 280), dtype=np.uint16)
    (tmp_path / "data").mkdir()
    tifffile.imwrite(tmp_path / "data" / "stack.tif", stack, photometric="minisblack")
    result = run_script("convert_tiff", tmp_path)
    assert "shape (3, 300, 280)" in result.stdout
    group = zarr.open_group(tmp_path / "stack.ome.zarr", mode="r")
    assert group["0"].chunks == (1, 256, 256)
    assert_array_equal(group["0"][:], stack)


def test_convert_tiff_tiles(tmp_path):
    (tmp_path / "data" / "tiles").mkdir(parents=True)
    tiles = np.random.default_rng(1).random((3, 20, 30)).astype(np.float32)
    for i, t in enumerate(tiles):
        tifffile.imwrite(tmp_path / "data" / "tiles" / f"t{i}.tif", t)
    config = (WORKFLOWS / "convert_tiff.example.toml").read_text()
    config = config.replace('kind = "stack"', 'kind = "tiles"').replace(
        "chunks = [1, 256, 256]", "chunks = [16, 16]"
    )
    (tmp_path / "c.toml").write_text(config)
    run_script("convert_tiff", tmp_path, tmp_path / "c.toml")
    group = zarr.open_group(tmp_path / "stack.ome.zarr", mode="r")
    assert_array_equal(group["t2"][:], tiles[2])


def _volume_pair(folder: Path, shape=(40, 48, 44), chunks=(16, 16, 16)):
    from chunkreg.io import create_array
    from chunkreg.testing import apply_flow, smooth_displacement, textured_image

    reference = textured_image(shape, seed=3, sigma=1.5)
    truth = smooth_displacement(shape, amplitude=2.0, seed=4)
    moving = apply_flow(reference, -truth)
    for name, data in (("reference", reference), ("moving", moving)):
        create_array(folder / f"{name}.zarr", shape=shape, dtype="float32", chunks=chunks)[:] = data
    return reference, moving, truth


def test_register_volumes_flow_then_warp(tmp_path):
    (tmp_path / "data").mkdir()
    # chunks no hard-coded tile of the example config would fit: its default tile must
    reference, moving, truth = _volume_pair(tmp_path / "data", chunks=(20, 24, 22))
    result = run_script("register_volumes", tmp_path)
    assert "failed" not in result.stderr
    flow = zarr.open_group(tmp_path / "flow.zarr", mode="r")["flow"][:]
    inner = (slice(None), *[slice(4, -4)] * 3)
    epe = np.sqrt(((flow - truth)[inner] ** 2).sum(axis=0)).mean()
    assert epe < 0.5 * np.sqrt((truth[inner] ** 2).sum(axis=0)).mean()
    registered = zarr.open_group(tmp_path / "registered.zarr", mode="r")["0"][:]
    assert np.abs(registered - reference).mean() < 0.5 * np.abs(moving - reference).mean()
    # a second run resumes: nothing left to compute
    again = run_script(
        "register_volumes", tmp_path, synchronous_config("register_volumes", tmp_path)
    )
    assert "0 done" in again.stdout


def test_register_volumes_blockwise(tmp_path):
    (tmp_path / "data").mkdir()
    reference, moving, _ = _volume_pair(tmp_path / "data")
    config = synchronous_config(
        "register_volumes", tmp_path, ('method = "ilk"', 'method = "blockwise"')
    )
    result = run_script("register_volumes", tmp_path, config)
    assert "reliable" in result.stdout
    registered = zarr.open_group(tmp_path / "registered.zarr", mode="r")["0"][:]
    assert np.abs(registered - reference).mean() < np.abs(moving - reference).mean()
    blocks = zarr.open_group(tmp_path / "blocks.zarr", mode="r")
    assert blocks.attrs["blocks"]["max_deviation"] == 5.0
    # TOML has no None: false switches the outlier rejection off
    config.write_text(config.read_text().replace("max_deviation = 5.0", "max_deviation = false"))
    run_script("register_volumes", tmp_path, config)
    blocks = zarr.open_group(tmp_path / "blocks.zarr", mode="r")
    assert blocks.attrs["blocks"]["max_deviation"] is None


def test_correct_timeseries(tmp_path):
    from chunkreg.demo import make_drifting_series

    (tmp_path / "data").mkdir()
    _frames, true_shifts = make_drifting_series(
        tmp_path / "data", n_frames=12, shape=(96, 96), max_drift=6.0
    )
    result = run_script(
        "correct_timeseries", tmp_path, synchronous_config("correct_timeseries", tmp_path)
    )
    assert "drift plot" in result.stdout
    shifts = zarr.open_group(tmp_path / "series-corrected.zarr", mode="r")["shifts"][:]
    np.testing.assert_allclose(shifts, true_shifts, atol=0.1)
    assert (tmp_path / "series-shifts.csv").read_text().count("\n") >= 12
    assert (tmp_path / "drift.png").stat().st_size > 1000


def test_stitch_mosaic(tmp_path):
    from chunkreg.io import create_array
    from chunkreg.testing import textured_image

    source = (textured_image((300, 300), seed=9, sigma=2.0) * 1000).astype(np.uint16)
    step = round(96 * 0.85)
    group = zarr.open_group(tmp_path / "data" / "tiles.zarr", mode="w")
    jitter = np.random.default_rng(3).integers(-3, 4, size=(9, 2))
    truth = {}
    for n in range(9):
        r, c = divmod(n, 3)
        y, x = r * step + jitter[n, 0] + 3, c * step + jitter[n, 1] + 3
        truth[f"t{n}"] = (y, x)
        create_array(group, name=f"t{n}", shape=(96, 96), dtype="uint16", chunks=(96, 96))[:] = (
            source[y : y + 96, x : x + 96]
        )
    result = run_script("stitch_mosaic", tmp_path, synchronous_config("stitch_mosaic", tmp_path))
    assert "positions:" in result.stdout
    import json

    solved = json.loads((tmp_path / "mosaic.positions.json").read_text())
    assert (tmp_path / "mosaic.positions.csv").exists() and (tmp_path / "mosaic.links.csv").exists()
    tiles = solved["tiles"] if isinstance(solved, dict) else solved
    positions = {t["name"]: np.asarray(t["position"], float) for t in tiles}
    offset = positions["t0"] - np.asarray(truth["t0"])
    for name, true in truth.items():
        np.testing.assert_allclose(positions[name] - offset, true, atol=0.5)

"""Every script in workflows/ runs on its example config against generated small data."""

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

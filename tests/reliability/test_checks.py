"""Never silently wrong, never a traceback: intensity scaling, missing and corrupt chunks,
texture-less tiles, QC regressions, early validation, clear one-line errors and stitching.

Every refusal asserts the exact message fragment and that the inputs and any prior output are
byte-for-byte unchanged (hashes of every file before and after), and that no output is left
behind where none existed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

import chunkreg
import chunkreg.stitching
from chunkreg.cli import main
from chunkreg.errors import InputError
from chunkreg.testing import apply_flow, smooth_displacement, textured_image
from chunkreg.volume import IntensityWarning, read_qc

ROOT = Path(__file__).resolve().parents[2]
SYNC = {"scheduler": "synchronous", "progress": False}
SHAPE, CHUNKS = (64, 64), (32, 32)


# -- helpers ---------------------------------------------------------------------------------


def tree_hash(path) -> str:
    """SHA-256 over every file below ``path`` (relative names and bytes); '' if absent."""
    path = Path(path)
    if not path.exists():
        return ""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(path.parent)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


class Unchanged:
    """Hashes of ``paths`` now; :meth:`check` asserts they are the same later."""

    def __init__(self, *paths) -> None:
        self.before = {str(p): tree_hash(p) for p in paths}

    def check(self) -> None:
        after = {p: tree_hash(p) for p in self.before}
        assert after == self.before


def write(path, data, chunks=CHUNKS, **kwargs) -> str:
    zarr.create_array(str(path), data=data, chunks=chunks, **kwargs)
    return str(path)


@pytest.fixture(scope="module")
def truth_pair():
    """A textured 64² reference, a moving image displaced by a known smooth flow, the flow."""
    ref = textured_image(SHAPE, seed=0, sigma=2.0)
    truth = smooth_displacement(SHAPE, amplitude=1.5, seed=1)
    return ref, apply_flow(ref, -truth), truth


@pytest.fixture
def pair(tmp_path, truth_pair):
    ref, mov, _ = truth_pair
    return write(tmp_path / "ref.zarr", ref), write(tmp_path / "mov.zarr", mov)


def epe(flow, truth) -> float:
    return float(np.sqrt(((flow - truth) ** 2).sum(axis=0)).mean())


def read_flow(output) -> np.ndarray:
    return zarr.open_array(str(output), path="flow", mode="r")[...]


def integer_version(image: np.ndarray, dtype) -> np.ndarray:
    """``image`` (values in [0, 1]) stored in most of ``dtype``'s range."""
    info = np.iinfo(dtype)
    lo, hi = (info.min // 2, info.max // 2) if info.min < 0 else (0, info.max * 0.9)
    return np.round(lo + np.clip(image, 0, 1) * (hi - lo)).astype(dtype)


# -- 1. integer inputs: tiles scale exactly as the in-memory kernels ------------------------

KERNEL_PARAMS = {"ilk": {"radius": 3}, "tvl1": {}}


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
def test_tiled_flow_on_integer_inputs_matches_the_in_memory_kernel(
    tmp_path, truth_pair, dtype, method
):
    ref, mov, truth = truth_pair
    r, m = integer_version(ref, dtype), integer_version(mov, dtype)
    paths = write(tmp_path / "r.zarr", r), write(tmp_path / "m.zarr", m)
    params = KERNEL_PARAMS[method]
    kernel = getattr(chunkreg, f"optical_flow_{method}")(r, m, **params)
    # one tile: the very computation of the kernel on the whole array
    chunkreg.compute_flow(*paths, tmp_path / "one.zarr", method=method, tile=SHAPE, levels=1,
                          **params, **SYNC)  # fmt: skip
    assert_allclose(read_flow(tmp_path / "one.zarr"), kernel, rtol=0, atol=1e-6)
    # 2 x 2 tiles with halos: as close to the truth as the kernel (the unscaled tiles of
    # earlier versions gave TV-L1 an endpoint error of 2.6-5.9 px here)
    chunkreg.compute_flow(*paths, tmp_path / "tiles.zarr", method=method, tile=CHUNKS, levels=1,
                          **params, **SYNC)  # fmt: skip
    tiled = read_flow(tmp_path / "tiles.zarr")
    assert epe(kernel, truth) < 0.2
    assert epe(tiled, truth) < epe(kernel, truth) + 0.02


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
def test_dask_blocks_scale_integer_inputs_as_the_kernel(truth_pair, dtype):
    import dask
    import dask.array as da

    import chunkreg.dask

    ref, mov, _ = truth_pair
    r, m = integer_version(ref, dtype), integer_version(mov, dtype)
    kernel = chunkreg.optical_flow_tvl1(r, m)
    with dask.config.set(scheduler="synchronous"):
        lazy = chunkreg.dask.optical_flow_tvl1(da.from_array(r), da.from_array(m)).compute()
    assert_allclose(lazy, kernel, rtol=0, atol=1e-6)  # one block: the kernel's own result


# -- 2. mixed intensity scales ---------------------------------------------------------------


@pytest.fixture
def mixed_scales(tmp_path, truth_pair):
    """A float32 reference against the moving image from a 12-bit camera stored as uint16."""
    ref, mov, truth = truth_pair
    return (
        write(tmp_path / "float.zarr", ref.astype(np.float32)),
        write(tmp_path / "camera12.zarr", np.round(np.clip(mov, 0, 1) * 4095).astype(np.uint16)),
        truth,
    )


@pytest.mark.parametrize("method", ["ilk", "tvl1"])
@pytest.mark.parametrize("normalize", ["auto", "percentile"])
def test_mixed_intensity_scales_are_normalised(
    tmp_path, truth_pair, mixed_scales, normalize, method
):
    ref, mov, truth = mixed_scales
    floats = [write(tmp_path / f"{n}.zarr", a.astype(np.float32))
              for n, a in (("r", truth_pair[0]), ("m", truth_pair[1]))]  # fmt: skip
    chunkreg.compute_flow(*floats, tmp_path / "same.zarr", method=method, tile=CHUNKS, **SYNC)
    same_scale = epe(read_flow(tmp_path / "same.zarr"), truth)
    plan = chunkreg.volume.plan_flow(ref, mov, method=method, tile=CHUNKS, normalize=normalize)
    why = "intensity scales differ, " if normalize == "auto" else ""
    assert f"intensities: normalised ({why}normalize={normalize!r}): reference [" in (
        plan.describe()
    )
    assert "each mapped to [0, 1]" in plan.describe()
    report = chunkreg.compute_flow(ref, mov, tmp_path / "o.zarr", method=method, tile=CHUNKS,
                                   normalize=normalize, **SYNC)  # fmt: skip
    assert report.status == "ok" and report.warnings == []
    # registered about as well as the same volume in one scale (the percentile mapping
    # stretches the intensities a little, which TV-L1's attachment weight notices)
    assert epe(read_flow(tmp_path / "o.zarr"), truth) < 1.25 * same_scale < 0.2


def test_normalize_none_keeps_todays_behaviour_with_a_warning(tmp_path, mixed_scales, capsys):
    ref, mov, truth = mixed_scales
    with pytest.warns(IntensityWarning, match="different intensity scales .* normalize='none'"):
        report = chunkreg.compute_flow(ref, mov, tmp_path / "o.zarr", tile=CHUNKS,
                                       normalize="none", **SYNC)  # fmt: skip
    assert report.notes["intensities"].startswith(
        "not normalised (normalize='none') although scales differ"
    )
    assert epe(read_flow(tmp_path / "o.zarr"), truth) > 5  # wrong, and now said so:
    assert report.status == "warning"
    assert report.warnings[0].startswith(
        "registration made the images less similar: median NCC per tile"
    )
    assert "WARNING, quality control:" in report.summary()
    # the command line: a warning on stderr, exit 0, and 3 under --strict
    for strict, code in ((False, 0), (True, 3)):
        argv = ["flow", ref, mov, str(tmp_path / f"cli{strict}.zarr"), "--tile", "32",
                "--normalize", "none", "--scheduler", "synchronous", "--no-progress"]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntensityWarning)
            assert main(argv + (["--strict"] if strict else [])) == code
        assert "chunkreg: warning: registration made the images less similar" in (
            capsys.readouterr().err
        )


def test_same_scales_are_left_alone(pair):
    plan = chunkreg.volume.plan_flow(*pair, tile=CHUNKS)
    assert "intensities: dtype scaling only (normalize='auto'; reference [" in plan.describe()
    assert not plan.reference_intensity.normalized and not plan.moving_intensity.normalized


# -- 3. tiles without texture ----------------------------------------------------------------


@pytest.mark.parametrize("levels", [1, 2])
def test_constant_reference_gives_zero_flow_and_flags(tmp_path, truth_pair, levels):
    _, mov, _ = truth_pair
    ref = write(tmp_path / "flat.zarr", np.full(SHAPE, 0.5, np.float32))
    mov = write(tmp_path / "m.zarr", mov)
    report = chunkreg.compute_flow(ref, mov, tmp_path / "o.zarr", tile=CHUNKS, levels=levels,
                                   **SYNC)  # fmt: skip
    assert_array_equal(read_flow(tmp_path / "o.zarr"), 0)  # not flows of tens of voxels
    assert_array_equal(read_qc(tmp_path / "o.zarr")["textureless"], 1)
    assert report.notes["tiles without texture"].startswith(
        "4 of 4 (constant reference or moving image: zero flow"
    )


def test_a_blank_tile_among_textured_ones_is_flagged_alone(tmp_path, truth_pair):
    ref, mov, truth = truth_pair
    ref = ref.copy()
    ref[:32, :32] = 0.25  # one tile's core is blank
    out = tmp_path / "o.zarr"
    chunkreg.compute_flow(write(tmp_path / "r.zarr", ref), write(tmp_path / "m.zarr", mov), out,
                          tile=CHUNKS, levels=1, overlap=4, radius=3, **SYNC)  # fmt: skip
    assert_array_equal(read_qc(out)["textureless"], [[1, 0], [0, 0]])
    flow = read_flow(out)
    assert_array_equal(flow[:, :28, :28], 0)  # its core, away from the blend band
    assert epe(flow[:, 40:, 40:], truth[:, 40:, 40:]) < 0.3


# -- 4. missing and corrupt input chunks -----------------------------------------------------


def _delete_chunk(path, key="c/0/1") -> None:
    os.remove(Path(path) / key)


def _flip_byte(path) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


MISSING = (
    "1 of 4 chunk files are missing from the store, and the data around some of them runs on "
    "into them (c/0/1): they were most likely lost, and zarr would read them as the fill"
)


def _flow_api(ref, mov, out, **kw):
    return chunkreg.compute_flow(ref, mov, out, tile=CHUNKS, **kw, **SYNC)


def _blocks_api(ref, mov, out, **kw):
    return chunkreg.blockwise_shifts(ref, mov, out, block=32, **kw, **SYNC)


def _flow_cli(ref, mov, out, **kw):
    extra = ["--allow-sparse"] if kw.get("allow_sparse") else []
    return main(["flow", ref, mov, str(out), "--tile", "32", "--scheduler", "synchronous",
                 "--no-progress", *extra])  # fmt: skip


def _blocks_cli(ref, mov, out, **kw):
    extra = ["--allow-sparse"] if kw.get("allow_sparse") else []
    return main(["blocks", ref, mov, str(out), "--block", "32", "--scheduler", "synchronous",
                 "--no-progress", *extra])  # fmt: skip


@pytest.mark.parametrize("which", ["reference", "moving"])
@pytest.mark.parametrize(
    "run", [_flow_api, _blocks_api, _flow_cli, _blocks_cli],
    ids=["flow", "blocks", "flow-cli", "blocks-cli"],
)  # fmt: skip
def test_missing_input_chunk_is_refused_and_named(tmp_path, pair, run, which, capsys):
    ref, mov = pair
    victim = ref if which == "reference" else mov
    _delete_chunk(victim)
    out = tmp_path / "out.zarr"
    inputs = Unchanged(ref, mov)
    if run in (_flow_cli, _blocks_cli):
        assert run(ref, mov, out) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"chunkreg: error: {which} {victim}: {MISSING}")
        assert err.count("\n") == 1  # one line, no traceback
    else:
        with pytest.raises(InputError, match=f"^{which} .*: {re.escape(MISSING)}"):
            run(ref, mov, out)
    assert not out.exists()
    inputs.check()
    # deliberately sparse: accepted with the switch
    result = run(ref, mov, out, allow_sparse=True)
    if isinstance(result, int):  # the command line's exit code
        assert result == 0
    else:  # a RunReport (flow) or BlockShifts (blocks)
        assert getattr(result, "report", result).ok
    inputs.check()


def test_missing_chunks_refused_by_warp_drift_and_stitch(tmp_path, pair):
    ref, mov = pair
    flow = tmp_path / "flow.zarr"
    zarr.create_array(str(flow), data=np.zeros((2, *SHAPE), np.float32), chunks=(1, 32, 32),
                      config={"write_empty_chunks": True})  # fmt: skip
    _delete_chunk(mov)
    inputs = Unchanged(ref, mov, flow)
    with pytest.raises(InputError, match=f"^moving .*: {re.escape(MISSING)}"):
        chunkreg.warp_volume(mov, flow, tmp_path / "w.zarr", **SYNC)
    stack = np.stack([textured_image(SHAPE, seed=s) for s in range(4)])
    stack_path = write(tmp_path / "stack.zarr", stack, chunks=(2, 32, 32))
    _delete_chunk(stack_path, "c/1/0/1")
    frames = Unchanged(stack_path)
    with pytest.raises(
        InputError, match=r"^stack .*: 1 of 8 chunk files are missing .* into them \(c/1/0/1\)"
    ):
        chunkreg.register_timeseries(stack_path, tmp_path / "d.zarr", **SYNC)
    layout = chunkreg.stitching.Layout(("a", "b"), [(0, 0), (0, 48)])
    with pytest.raises(InputError, match=f"^tile 'b' .*: {re.escape(MISSING)}"):
        chunkreg.stitch([ref, mov], layout, tmp_path / "s.zarr", **SYNC)
    for out in ("w.zarr", "d.zarr", "s.zarr"):
        assert not (tmp_path / out).exists()
    inputs.check()
    frames.check()


def test_sharded_inputs_are_checked_shard_by_shard(tmp_path, truth_pair):
    big = np.tile(truth_pair[0], (2, 2))
    paths = [write(tmp_path / f"{n}.zarr", big, chunks=(16, 16), shards=(64, 64))
             for n in ("r", "m")]  # fmt: skip
    assert chunkreg.volume.plan_flow(*paths, tile=64).shape == (128, 128)
    _delete_chunk(paths[1], "c/1/0")
    with pytest.raises(
        InputError, match=r"1 of 4 shard files are missing from the store, .* into them \(c/1/0\)"
    ):
        chunkreg.volume.plan_flow(*paths, tile=64)


def _truncate(path) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


CORRUPT = "chunk {} cannot be read (RuntimeError: "


def test_corrupt_input_chunk_found_by_the_plan_is_named(tmp_path, pair):
    ref, mov = pair
    _truncate(Path(mov) / "c/1/0")  # zstd cannot decode it; the plan samples every chunk
    inputs = Unchanged(ref, mov)
    with pytest.raises(InputError, match=re.escape(f"moving {mov}: {CORRUPT.format('c/1/0')}")):
        chunkreg.compute_flow(ref, mov, tmp_path / "o.zarr", tile=CHUNKS, **SYNC)
    assert not (tmp_path / "o.zarr").exists()
    inputs.check()


def test_corrupt_input_chunk_met_by_a_task_is_named(tmp_path, truth_pair):
    ref, mov, _ = truth_pair
    # 64 chunks of 8²: the plan's sample of 16 chunks leaves chunk (0, 1) to the tile task
    paths = write(tmp_path / "r.zarr", ref, (8, 8)), write(tmp_path / "m.zarr", mov, (8, 8))
    _truncate(Path(paths[1]) / "c/0/1")
    inputs = Unchanged(*paths)
    report = chunkreg.compute_flow(*paths, tmp_path / "o.zarr", tile=CHUNKS, levels=1, **SYNC)
    # the two tiles whose read region (core and halo) covers the chunk fail, naming it
    assert [f.index for f in report.failures] == [0, 1]
    for failure in report.failures:
        assert f"moving {paths[1]}: {CORRUPT.format('c/0/1')}" in failure.error
        assert "the stored file is corrupt or truncated: restore it" in failure.error
    inputs.check()


def test_nan_frame_is_named(tmp_path):
    stack = np.stack([textured_image(SHAPE, seed=s) for s in range(6)])
    stack[4, 10, 10] = np.nan
    path = write(tmp_path / "stack.zarr", stack, chunks=(3, 32, 32))
    inputs = Unchanged(path)
    result = chunkreg.register_timeseries(path, tmp_path / "d.zarr", reference=0, **SYNC)
    (failure,) = result.report.failures  # reported like every workflow's failed tasks
    assert "frame 4 of the stack holds NaN or infinite values" in failure.error
    assert failure.description == "register: batch 0 (frames 0..5)"
    inputs.check()


# -- 5. outputs carry checksums --------------------------------------------------------------


def test_a_flipped_byte_in_an_output_chunk_is_detected(tmp_path, pair):
    out = tmp_path / "o.zarr"
    chunkreg.compute_flow(*pair, out, tile=CHUNKS, levels=1, **SYNC)
    flow = zarr.open_array(str(out), path="flow", mode="r")
    assert any(type(c).__name__ == "Crc32cCodec" for c in flow.metadata.codecs)
    good = flow[...]
    _flip_byte(out / "flow" / "c/1/0/1")
    with pytest.raises(ValueError, match="Stored and computed checksum do not match"):
        zarr.open_array(str(out), path="flow", mode="r")[...]
    assert np.isfinite(good).all()


# -- 6. clear errors before anything is written ----------------------------------------------


def test_huge_tiles_are_clipped_to_the_volume(tmp_path, pair, capsys):
    out = tmp_path / "unused.zarr"
    assert main(["flow", *pair, str(out), "--tile", "100000", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "tiles: 1 = 1 x 1 of (64, 64)" in text
    assert "estimated memory: 0.3 MiB per task" in text  # not terabytes
    assert "disk (uncompressed): flow 32.0 KiB" in text
    assert not out.exists()


class _SmallWorkers:
    """Stands in for a Client whose workers have 64 MiB each (only metadata is asked)."""

    def scheduler_info(self):
        return {"workers": {"w": {"memory_limit": 64 * 2**20, "nthreads": 1}}}


def test_tasks_larger_than_the_workers_memory_are_refused_first(tmp_path, pair):
    out = tmp_path / "o.zarr"
    inputs = Unchanged(*pair)
    with pytest.raises(InputError, match=r"more than its memory limit of 0\.1 GiB; use smaller"):
        chunkreg.compute_flow(*pair, out, tile=SHAPE, client=_SmallWorkers(), progress=False)
    assert not out.exists()
    inputs.check()


def test_a_garbage_scheduler_address_is_one_line_and_leaves_nothing(tmp_path, pair, capsys):
    out = tmp_path / "out.zarr"
    inputs = Unchanged(*pair)
    assert main(["flow", *pair, str(out), "--tile", "32", "--scheduler", "garbage"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chunkreg: error: 'garbage' is not a Dask scheduler address (")
    assert err.endswith("give one such as tcp://host:8786, or 'synchronous'.\n")
    assert err.count("\n") == 1
    assert not out.exists()  # the output group is created only once the cluster is there
    inputs.check()


def test_a_bad_normalize_choice_is_refused_by_the_parser(tmp_path, pair, capsys):
    out = tmp_path / "out.zarr"
    with pytest.raises(SystemExit) as exit_info:
        main(["flow", *pair, str(out), "--normalize", "sometimes"])
    assert exit_info.value.code == 2
    assert "argument --normalize: invalid choice: 'sometimes'" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output_location_is_one_line(tmp_path, pair, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "out.zarr"
    inputs = Unchanged(*pair, blocker)
    code = main(["flow", *pair, str(out), "--tile", "32", "--scheduler", "synchronous",
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err.startswith("chunkreg: error: ") and "choose an output location you can write to" in err
    )
    assert err.count("\n") == 1
    inputs.check()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"normalize": "sometimes"}, "normalize must be one of ['auto', 'none', 'percentile']"),
        ({"allow_sparse": "yes"}, "allow_sparse must be True or False, got 'yes'"),
    ],
)
def test_bad_new_parameters_are_refused(tmp_path, pair, kwargs, fragment):
    out = tmp_path / "o.zarr"
    inputs = Unchanged(*pair)
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        chunkreg.compute_flow(*pair, out, tile=CHUNKS, **kwargs, **SYNC)
    assert not out.exists()
    inputs.check()


def _register_volumes_script():
    spec = importlib.util.spec_from_file_location(
        "register_volumes", ROOT / "workflows" / "register_volumes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_warp_order_is_refused_before_the_flow_is_computed(tmp_path, pair, capsys):
    from chunkreg._scripts import script_main

    config = tmp_path / "c.toml"
    config.write_text(
        f'[input]\nreference = "{pair[0]}"\nmoving = "{pair[1]}"\n'
        '[registration]\nmethod = "ilk"\n'
        f'[output]\nflow = "{tmp_path / "flow.zarr"}"\nregistered = "{tmp_path / "reg.zarr"}"\n'
        "order = 9\n"
    )
    inputs = Unchanged(*pair)
    module = _register_volumes_script()
    assert script_main(module.run, "", [str(config)]) == 2
    assert "order must be an integer from 0 to 5, got 9" in capsys.readouterr().err
    assert not (tmp_path / "flow.zarr").exists() and not (tmp_path / "reg.zarr").exists()
    inputs.check()


# -- 7. QC regressions -----------------------------------------------------------------------


def test_qc_regressions_name_what_got_worse():
    from chunkreg.volume import qc_regressions

    assert qc_regressions([0.5, 0.6, 0.7], [0.9, 0.9, 0.9]) == []
    assert qc_regressions([0.9, 0.9, 0.9], [0.5, 0.95, 0.95]) == [
        "1 of 3 tiles got worse by more than 0.05 in NCC (largest drop 0.400, tile 0)"
    ]
    lines = qc_regressions([0.9, 0.9], [0.2, 0.3], label="block")
    assert lines[0] == (
        "registration made the images less similar: median NCC per block 0.900 before, 0.250 after"
    )
    assert qc_regressions([0.9, np.nan], [0.2, 0.1], skip=[True, False]) == []


# -- 8. stitching ----------------------------------------------------------------------------


@pytest.fixture
def mosaic(tmp_path):
    """Four overlapping 48² tiles of one image in a zarr group, and their layout file."""
    image = (1000 + 10000 * textured_image((90, 90), seed=4)).astype(np.uint16)
    group = zarr.open_group(str(tmp_path / "tiles.zarr"), mode="w")
    entries = []
    for k, (y, x) in enumerate([(0, 0), (0, 42), (42, 0), (42, 42)]):
        group.create_array(f"t{k}", data=image[y : y + 48, x : x + 48], chunks=(48, 48))
        entries.append({"name": f"t{k}", "path": f"tiles.zarr/t{k}", "position": [y, x]})
    (tmp_path / "layout.json").write_text(json.dumps({"tiles": entries}))
    return tmp_path, image


def test_refusing_chunkregs_own_positions_file_with_tiles_group(mosaic, monkeypatch):
    tmp_path, image = mosaic
    monkeypatch.chdir(tmp_path)
    argv = ["--scheduler", "synchronous", "--no-progress"]
    assert main(["stitch", "layout.json", "first.zarr", *argv]) == 0
    assert main(["stitch", "first.positions.json", "again.zarr", "--tiles", "tiles.zarr",
                 "--fuse-only", *argv]) == 0  # fmt: skip
    first = zarr.open_group("first.zarr", mode="r")["0"][...]
    again = zarr.open_group("again.zarr", mode="r")["0"][...]
    assert_array_equal(again, first)
    assert_array_equal(first, image)


@pytest.mark.parametrize("fuse_only", [False, True])
def test_two_tiles_at_one_position_are_refused(mosaic, monkeypatch, capsys, fuse_only):
    tmp_path, _ = mosaic
    monkeypatch.chdir(tmp_path)
    layout = json.loads(Path("layout.json").read_text())
    layout["tiles"][1]["position"] = [0, 0]
    Path("dup.json").write_text(json.dumps(layout))
    inputs = Unchanged("tiles.zarr", "dup.json")
    extra = ["--fuse-only"] if fuse_only else []
    assert main(["stitch", "dup.json", "dup.zarr", "--scheduler", "synchronous", *extra]) == 2
    assert (
        "chunkreg: error: tiles 't0' and 't1' are at the same position (0, 0) in the layout"
        in capsys.readouterr().err
    )
    assert not Path("dup.zarr").exists() and not Path("dup.positions.json").exists()
    inputs.check()

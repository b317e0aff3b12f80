"""One workflow contract: every ``plan_*`` returns a plan with ``describe()`` and ``signature()``.

``describe()`` names the plan's tiles (or blocks, batches) and its depth (the halo a task reads);
``signature()`` is a JSON-able dict that two plans of the same inputs and options share and that
changes with an option that changes the output. Planning writes nothing.
"""

import json

import numpy as np
import pytest
import zarr

from chunkreg.stitching import plan_stitch, regular_grid
from chunkreg.testing import textured_image
from chunkreg.timeseries import plan_timeseries
from chunkreg.volume import (
    plan_blockwise_shifts,
    plan_flow,
    plan_shifts_to_flow,
    plan_warp_volume,
)


@pytest.fixture
def data(tmp_path):
    image = textured_image((96, 80), seed=3).astype(np.float32)
    ref = zarr.create_array(str(tmp_path / "ref.zarr"), data=image, chunks=(32, 40))
    mov = zarr.create_array(str(tmp_path / "mov.zarr"), data=np.roll(image, 2, 0), chunks=(32, 40))
    flow = zarr.create_array(str(tmp_path / "flow.zarr"), shape=(2, 96, 80), dtype="f4",
                             chunks=(1, 32, 40), fill_value=0.0)  # fmt: skip
    stack = zarr.create_array(str(tmp_path / "stack.zarr"),
                              data=np.stack([np.roll(image, t, 1) for t in range(5)]),
                              chunks=(1, 96, 80))  # fmt: skip
    tiles = zarr.open_group(str(tmp_path / "tiles.zarr"), mode="w")
    layout = regular_grid((2, 2), (56, 48), overlap=0.25)
    for name, (y, x) in zip(layout.names, layout.positions.astype(int), strict=True):
        tiles.create_array(name, data=image[y : y + 56, x : x + 48], chunks=(28, 24))
    return {"ref": ref, "mov": mov, "flow": flow, "stack": stack, "tiles": tiles,
            "layout": layout, "dir": tmp_path}  # fmt: skip


def _plans(d, variant=False):
    """Each workflow's plan; ``variant`` changes one option that changes the output."""
    shifts = np.zeros((3, 2, 2))
    shifts[..., 1] = 2.0
    return {
        "flow": plan_flow(d["ref"], d["mov"], tile=(64, 40), overlap=6 if variant else 4,
                          levels=1),
        "warp": plan_warp_volume(d["mov"], d["flow"], order=3 if variant else 1),
        "blocks": plan_blockwise_shifts(d["ref"], d["mov"], block=32, overlap=4 if variant else 8),
        "shifts_to_flow": plan_shifts_to_flow(shifts, shape=(96, 80), block=(32, 40),
                                              order=1 if variant else 3),
        "timeseries": plan_timeseries(d["stack"], upsample_factor=20 if variant else 10,
                                      batch_size=2),
        "stitch": plan_stitch(d["tiles"], d["layout"], blend="max" if variant else "linear"),
    }  # fmt: skip


EXPECTED = {  # what describe() says about tiles and depth
    "flow": ("tiles: 4 = 2 x 2 of (64, 40)", "halo (depth): (4, 4)"),
    "warp": ("tiles: 1 in a grid of (1, 1)", "depth 0"),
    "blocks": ("blocks: 9 in a grid of (3, 3)", "depth, i.e. halo"),
    "shifts_to_flow": ("tiles: 1 in a grid of (1, 1)", "depth (0, 0)"),
    "timeseries": ("tiles: 3 batches of up to 2 whole frames", "depth 0"),
    "stitch": ("tiles: 4 of 2-D float32", "depth 0"),
}


def test_every_plan_describes_its_tiles_and_depth(data):
    plans = _plans(data)
    assert set(plans) == set(EXPECTED)
    for name, plan in plans.items():
        text = plan.describe()
        for phrase in EXPECTED[name]:
            assert phrase in text, f"{name}: {phrase!r} not in\n{text}"


def test_signatures_are_stable_and_follow_the_options(data):
    first, again, other = _plans(data), _plans(data), _plans(data, variant=True)
    for name in first:
        sig = first[name].signature()
        json.dumps(sig, default=str)  # storable in the output's attributes
        assert sig == again[name].signature(), name
        assert sig != other[name].signature(), name


def test_planning_writes_nothing(data):
    before = sorted(p.relative_to(data["dir"]) for p in data["dir"].rglob("*"))
    _plans(data)
    assert sorted(p.relative_to(data["dir"]) for p in data["dir"].rglob("*")) == before

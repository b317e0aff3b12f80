"""Display pyramids of image outputs, built on the engine: one stage per level.

Warped volumes, corrected series and mosaics get their pyramid here; the levels, their arrays
and the per-region kernel are :mod:`chunkreg.io._pyramid`'s.
"""

from __future__ import annotations

import time

import zarr

from ..execution import RunReport
from ..io import CompletionRecord, Space, write_space
from ..io._pyramid import mean_downsample_tile, output_levels, pyramid_factors
from ._stages import StageRunner
from ._tasks import IndexedTasks

__all__ = ["add_output_pyramid", "build_output_pyramid"]


def add_output_pyramid(
    runner: StageRunner,
    group: zarr.Group,
    base: str,
    space: Space,
    *,
    levels: bool | int = True,
    name: str | None = None,
) -> bool:
    """Run the pyramid levels of image ``group[base]`` as stages of ``runner``.

    Each level's regions are tasks with a completion record (``pyramid_<path>``), so a killed
    run resumes. When every level is done the group's OME-Zarr metadata lists them all, with
    their scale and translation, and the report's note ``pyramid levels`` counts them.

    Returns
    -------
    bool
        True when every level was built (else the metadata lists level 0 only and the later
        levels are not started).
    """
    factors = pyramid_factors(group[base].shape, space, levels)
    paths = [base]
    for out in output_levels(group, base, factors, space):
        tasks = IndexedTasks(len(out.grid), out.make)
        record = CompletionRecord(group, out.record_name, len(tasks))
        if not runner.run(f"pyramid {out.level}", mean_downsample_tile, tasks, record=record):
            return False
        paths.append(out.path)
    write_space(group, paths, space, factors=factors, name=name)
    runner.report.notes["pyramid levels"] = len(paths)
    return True


def build_output_pyramid(
    group: zarr.Group,
    base: str,
    space: Space,
    *,
    client,
    levels: bool | int = True,
    name: str | None = None,
    progress: bool = True,
) -> RunReport:
    """Add the pyramid levels of image ``group[base]``, region by region, and record them.

    Level ``L`` is the block mean of level ``L - 1`` over the steps
    :func:`~chunkreg.volume.pyramid_factors` gives, computed by tasks that each own a
    chunk-aligned region of level ``L`` and write it once; a completion record per level lets a
    killed run resume. When every level is done the group's OME-Zarr metadata lists them all,
    each with its scale and translation (a mean of ``f`` voxels lies ``(f - 1) / 2`` voxels
    further on).

    Parameters
    ----------
    group : zarr.Group
        The output group; ``group[base]`` is complete.
    base : str
        Path of level 0.
    space : Space
        Physical space of level 0.
    client : distributed.Client or SYNCHRONOUS
        From :func:`chunkreg.execution.open_client`.
    levels : bool or int
        As for :func:`~chunkreg.volume.pyramid_factors`.
    name : str, optional
        Image name in the metadata.
    progress : bool
        Draw a progress line.

    Returns
    -------
    RunReport
        Of all levels' tasks; not ``ok`` if some failed (the metadata then lists level 0 only).
    """
    t0 = time.perf_counter()
    runner = StageRunner(client, label="pyramid regions", progress=progress)
    add_output_pyramid(runner, group, base, space, levels=levels, name=name)
    report = runner.report
    report.wall_time = time.perf_counter() - t0
    return report

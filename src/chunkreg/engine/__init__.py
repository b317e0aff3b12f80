"""The tile engine: every workflow's stages run through here.

:func:`map_tiles` runs a user's function over arrays larger than memory, tile by tile with a
halo (``depth``), cropping or blending the results into a write-once zarr output with resume;
:func:`plan_map_tiles` and :func:`run_map_tiles` are its plan/run layer.
:class:`StageRunner` runs a workflow's stages (each a :func:`~chunkreg.execution.run_tasks`
call with its completion record or :class:`ResultSink`) and folds them into one report;
:class:`IndexedTasks` builds tasks on demand; :class:`Scratch` holds tile results cut into
pieces (:class:`~chunkreg.tiling.PieceLayout`) until a blend stage stitches them;
:func:`workflow_scope`, :func:`output_location` and :func:`output_note` are what every run
does around its stages.
"""

from ._blend import Scratch, blend_region, create_scratch
from ._map_tiles import MapTilesPlan, map_tiles, plan_map_tiles, run_map_tiles
from ._pyramid import add_output_pyramid, build_output_pyramid
from ._runs import output_location, output_note, workflow_scope
from ._sink import ResultSink
from ._stages import StageRunner
from ._tasks import IndexedTasks

__all__ = [
    "IndexedTasks",
    "MapTilesPlan",
    "ResultSink",
    "Scratch",
    "StageRunner",
    "add_output_pyramid",
    "blend_region",
    "build_output_pyramid",
    "create_scratch",
    "map_tiles",
    "output_location",
    "output_note",
    "plan_map_tiles",
    "run_map_tiles",
    "workflow_scope",
]

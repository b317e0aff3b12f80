"""Volume workflows: kernels run tile by tile over zarr volumes on a Dask cluster.

:func:`compute_flow` computes dense optical flow between two volumes; :func:`plan_flow`
returns the plan it would follow (tiles, halo, memory) without writing anything.
:func:`blockwise_shifts` registers blocks rigidly and :func:`shifts_to_flow` turns the block
grid into a dense flow; :func:`warp_volume` applies a flow to a volume.
"""

from ._blockwise import BlockShifts, blockwise_shifts
from ._flow import FLOW_ARRAY, compute_flow, run_flow_plan
from ._methods import DEFAULT_MOTION, flow_depth
from ._planning import FlowPlan, default_tile, plan_flow
from ._shifts_to_flow import shifts_to_flow
from ._warp_volume import warp_volume

__all__ = [
    "DEFAULT_MOTION",
    "FLOW_ARRAY",
    "BlockShifts",
    "FlowPlan",
    "blockwise_shifts",
    "compute_flow",
    "default_tile",
    "flow_depth",
    "plan_flow",
    "run_flow_plan",
    "shifts_to_flow",
    "warp_volume",
]

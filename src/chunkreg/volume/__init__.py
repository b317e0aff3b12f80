"""Volume workflows: kernels run tile by tile over zarr volumes on a Dask cluster.

:func:`compute_flow` computes dense optical flow between two volumes; :func:`plan_flow`
returns the plan it would follow (tiles, halo, memory) without writing anything.
"""

from ._flow import FLOW_ARRAY, compute_flow, run_flow_plan
from ._methods import DEFAULT_MOTION, flow_depth
from ._planning import FlowPlan, default_tile, plan_flow

__all__ = [
    "DEFAULT_MOTION",
    "FLOW_ARRAY",
    "FlowPlan",
    "compute_flow",
    "default_tile",
    "flow_depth",
    "plan_flow",
    "run_flow_plan",
]

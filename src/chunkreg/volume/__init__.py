"""Volume workflows: kernels run tile by tile over zarr volumes on a Dask cluster.

:func:`compute_flow` computes dense optical flow between two volumes, coarse to fine over an
image pyramid and seam-free across tiles; :func:`plan_flow` returns the plan it would follow
(levels, tiles, halo, memory) without writing anything.
:func:`estimate_affine` finds the global affine transform (the other workflows take it as
``initial_affine`` / ``affine``); :func:`blockwise_shifts` registers blocks rigidly and :func:`shifts_to_flow` turns the block
grid into a dense flow; :func:`warp_volume` applies a flow to a volume.
"""

from ..registration._methods import DEFAULT_MOTION, flow_depth
from ._affine import estimate_affine
from ._affine_pipeline import PipelineResult, register_volumes
from ._affine_result import AffineResult, load_affine
from ._blockwise import (
    BlockShifts,
    BlocksPlan,
    blockwise_shifts,
    load_block_shifts,
    plan_blockwise_shifts,
)
from ._flow import FLOW_ARRAY, compute_flow, run_flow_plan
from ._intensity import Intensity, IntensityWarning, plan_intensity
from ._levels import LevelPlan
from ._planning import FlowPlan, default_tile, plan_flow
from ._pyramid import build_output_pyramid, pyramid_factors
from ._qc import (
    combine_seam_sums,
    plot_qc,
    qc_regressions,
    read_qc,
    seam_metric,
    seam_sums,
    summarise_qc,
    write_qc,
)
from ._shifts_to_flow import ShiftsToFlowPlan, plan_shifts_to_flow, shifts_to_flow
from ._warp_volume import WarpPlan, check_warp_options, plan_warp_volume, warp_volume

__all__ = [
    "DEFAULT_MOTION",
    "FLOW_ARRAY",
    "AffineResult",
    "BlockShifts",
    "BlocksPlan",
    "FlowPlan",
    "Intensity",
    "IntensityWarning",
    "LevelPlan",
    "PipelineResult",
    "ShiftsToFlowPlan",
    "WarpPlan",
    "blockwise_shifts",
    "build_output_pyramid",
    "check_warp_options",
    "combine_seam_sums",
    "compute_flow",
    "default_tile",
    "estimate_affine",
    "flow_depth",
    "load_affine",
    "load_block_shifts",
    "plan_blockwise_shifts",
    "plan_flow",
    "plan_intensity",
    "plan_shifts_to_flow",
    "plan_warp_volume",
    "plot_qc",
    "pyramid_factors",
    "qc_regressions",
    "read_qc",
    "register_volumes",
    "run_flow_plan",
    "seam_metric",
    "seam_sums",
    "shifts_to_flow",
    "summarise_qc",
    "warp_volume",
    "write_qc",
]

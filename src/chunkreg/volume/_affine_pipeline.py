"""The volume registration pipeline: global affine, then local registration, then the warp.

Each step is one of the resumable workflows; a step whose output is complete from an earlier
run with the same parameters is not recomputed, so running the pipeline again resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError

__all__ = ["STEPS", "PipelineResult", "register_volumes"]

#: Pipeline steps, in the order they run.
STEPS = ("affine", "blocks", "flow", "warp")
_OUTPUTS = {"affine": "affine", "blocks": "blocks", "flow": "flow", "warp": "registered"}


@dataclass
class PipelineResult:
    """What each step of :func:`register_volumes` did."""

    reports: dict = field(default_factory=dict)  # step -> RunReport
    qc: dict = field(default_factory=dict)  # step -> one line of quality control
    affine: object = None

    @property
    def ok(self) -> bool:
        """True when no task of any step failed."""
        return all(r.ok for r in self.reports.values())

    def summary(self) -> str:
        """One block per step: its report, then the QC line."""
        parts = []
        for step, report in self.reports.items():
            parts.append(f"== {step} ==\n{report.summary()}\nQC: {self.qc.get(step, '-')}")
        return "\n".join(parts)


def _qc_line(report, keys) -> str:
    found = [f"{k} {report.notes[k]}" for k in keys if k in report.notes]
    return "; ".join(found) or "-"


def register_volumes(
    reference,
    moving,
    outputs: dict,
    *,
    steps=("affine", "flow", "warp"),
    affine: dict | None = None,
    blocks: dict | None = None,
    flow: dict | None = None,
    warp: dict | None = None,
    channel: int | None = None,
    client=None,
    overwrite: bool = False,
    progress: bool = True,
) -> PipelineResult:
    """Register ``moving`` onto ``reference``: affine, local (blocks or flow), warp.

    Parameters
    ----------
    reference, moving : zarr.Array, str or os.PathLike
        The volumes.
    outputs : dict
        Output path per step: ``affine``, ``blocks``, ``flow``, ``registered`` (the warp's).
    steps : sequence of str
        Steps to run, from :data:`STEPS`. ``blocks`` and ``flow`` are alternative local steps
        (one shift per block interpolated into a flow, or dense optical flow), each measured
        after the affine when ``affine`` runs; ``warp`` applies the affine and the local flow.
    affine, blocks, flow, warp : dict, optional
        Keyword arguments of :func:`estimate_affine`, :func:`blockwise_shifts` (``block`` is
        required), :func:`compute_flow` and :func:`warp_volume`. ``flow``'s ``shards`` also
        shards the flow that the blocks step interpolates (:func:`shifts_to_flow`).
    channel : int, optional
        The registration channel of multi-channel inputs: every estimate reads only that
        channel (see :func:`compute_flow`); the warp applies the result to every channel of
        ``moving``, and its QC compares that channel with the reference.
    client, overwrite, progress
        As for the workflows.

    Returns
    -------
    PipelineResult
        The report and a QC line of each step; ``summary()`` prints them.

    Raises
    ------
    InputError
        Unknown steps, both local steps, or a missing output path; nothing is written.
    """
    from ._affine import estimate_affine
    from ._blockwise import blockwise_shifts
    from ._flow import compute_flow
    from ._shifts_to_flow import shifts_to_flow
    from ._warp_volume import warp_volume

    steps = tuple(steps)
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise InputError(f"steps must be a non-empty list of {STEPS}, got {list(steps)}.")
    if "blocks" in steps and "flow" in steps:
        raise InputError(
            "steps 'blocks' and 'flow' are alternative local registrations; choose one."
        )
    for step in steps:
        need = _OUTPUTS[step]
        if need not in outputs:
            raise InputError(f"step {step!r} needs an output path '{need}'.")
    if "blocks" in steps and "flow" not in outputs:
        raise InputError("step 'blocks' needs an output path 'flow' for its interpolated flow.")
    common = {"client": client, "overwrite": overwrite, "progress": progress}
    chan = {} if channel is None else {"channel": channel}
    result = PipelineResult()
    matrix = outputs.get("affine") if "affine" in steps else None
    if "affine" in steps:
        est = estimate_affine(reference, moving, outputs["affine"], **chan, **(affine or {}),
                              **common)  # fmt: skip
        result.affine = est
        result.reports["affine"] = est.report
        result.qc["affine"] = _qc_line(est.report, ("inliers", "NCC per block"))
        matrix = est
    local = None
    if "blocks" in steps:
        params = dict(blocks or {})
        if "block" not in params:
            raise InputError("step 'blocks' needs a block shape ([blocks] block = ...).")
        shifts = blockwise_shifts(reference, moving, outputs["blocks"], initial_affine=matrix,
                                  **chan, **params, **common)  # fmt: skip
        result.reports["blocks"] = shifts.report
        result.qc["blocks"] = _qc_line(shifts.report, ("reliable blocks",))
        # the interpolated flow is sharded as the flow step's would be ("auto": unsharded,
        # there being no input to inherit shards from)
        to_flow = {"shards": (flow or {})["shards"]} if "shards" in (flow or {}) else {}
        result.reports["blocks to flow"] = shifts_to_flow(outputs["blocks"], outputs["flow"],
                                                          **to_flow, **common)  # fmt: skip
        local = outputs["flow"]
    if "flow" in steps and result.ok:
        report = compute_flow(reference, moving, outputs["flow"], initial_affine=matrix,
                              **chan, **(flow or {}), **common)  # fmt: skip
        result.reports["flow"] = report
        result.qc["flow"] = _qc_line(report, ("NCC per tile", "seam metric"))
        local = outputs["flow"]
    if "warp" in steps and result.ok:
        if local is None and matrix is None:
            raise InputError(
                "step 'warp' needs an affine or a local step (blocks or flow) to apply."
            )
        params = {"reference": reference, **chan, **(warp or {})}
        # a flow computed after the affine records it and warp applies both
        report = warp_volume(moving, local, outputs["registered"],
                             affine=matrix if local is None else None, **params, **common)  # fmt: skip
        result.reports["warp"] = report
        result.qc["warp"] = _qc_line(report, ("NCC to reference",))
    return result

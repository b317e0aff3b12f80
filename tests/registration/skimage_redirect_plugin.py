"""pytest plugin: scikit-image's registration functions replaced by chunkreg's kernels.

Loaded with ``-p skimage_redirect_plugin`` only by the pytest process that
``test_skimage_suite.py`` starts on scikit-image's own ``registration`` test files (fetched
from its sdist, never part of this repository). ``pytest_configure`` runs before the test
modules are imported, so their ``from skimage.registration import optical_flow_ilk`` (and
the imports from the private modules) bind chunkreg's functions. scikit-image's other
functions (``skimage.transform.warp`` that makes the test data, ``skimage.data``, ...) stay
scikit-image's.
"""

from __future__ import annotations

import pytest
import skimage.registration
from skimage.registration import _masked_phase_cross_correlation as _sk_masked
from skimage.registration import _optical_flow as _sk_flow
from skimage.registration import _phase_cross_correlation as _sk_phase

import chunkreg


def masked_shifts(
    reference_image, moving_image, reference_mask, moving_mask=None, overlap_ratio=0.3
):
    """scikit-image's private ``_masked_phase_cross_correlation``: the shift alone."""
    shifts, _, _ = chunkreg.phase_cross_correlation(
        reference_image,
        moving_image,
        reference_mask=reference_mask,
        moving_mask=moving_mask,
        overlap_ratio=overlap_ratio,
    )
    return shifts


#: (module, attribute) -> chunkreg's replacement.
REDIRECTS = {
    (skimage.registration, "optical_flow_ilk"): chunkreg.optical_flow_ilk,
    (skimage.registration, "optical_flow_tvl1"): chunkreg.optical_flow_tvl1,
    (skimage.registration, "phase_cross_correlation"): chunkreg.phase_cross_correlation,
    (_sk_flow, "optical_flow_ilk"): chunkreg.optical_flow_ilk,
    (_sk_flow, "optical_flow_tvl1"): chunkreg.optical_flow_tvl1,
    (_sk_phase, "phase_cross_correlation"): chunkreg.phase_cross_correlation,
    (_sk_masked, "_masked_phase_cross_correlation"): masked_shifts,
}


def pytest_configure(config: pytest.Config) -> None:
    for (module, name), replacement in REDIRECTS.items():
        if not hasattr(module, name):
            raise pytest.UsageError(
                f"{module.__name__}.{name} does not exist in this scikit-image version: update "
                "REDIRECTS in tests/registration/skimage_redirect_plugin.py."
            )
        setattr(module, name, replacement)


def pytest_terminal_summary(terminalreporter) -> None:
    names = sorted({f"{m.__name__}.{n}" for m, n in REDIRECTS})
    terminalreporter.write_line("redirected to chunkreg: " + ", ".join(names))

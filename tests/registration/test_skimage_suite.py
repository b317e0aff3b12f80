"""scikit-image's own registration tests, run against chunkreg's kernels.

The installed scikit-image wheel ships no tests, so the sdist of the installed version is
fetched from the package index (PEP 691 JSON, checked against the index's sha256), and
only its ``tests/skimage/registration`` directory (and the ``conftest.py`` above it) is
unpacked into a cache directory outside the repository: ``$CHUNKREG_TEST_CACHE`` or
``~/.cache/chunkreg``. A separate pytest process runs those files with
``skimage_redirect_plugin`` loaded, which points scikit-image's registration functions at
chunkreg's (see that module), so this process's scikit-image, our oracle elsewhere, is left
alone. Every test must pass or be listed in ``EXCLUDED`` with its reason. Without network
the test is skipped, except under CI (``$CI`` set), where it fails.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SKIMAGE_VERSION = importlib.metadata.version("scikit-image")
HERE = Path(__file__).resolve().parent

#: Test-id prefixes (file::test) not run, each with why.
EXCLUDED = {
    "test_phase_cross_correlation.py::test_disambiguate_empty_image": (
        "chunkreg returns a zero shift, error 1.0, phasediff 0.0 for a blank image, without "
        "scikit-image's two warnings and its error nan (documented in docs/comparison.md)"
    ),
    "test_phase_cross_correlation.py::test_disambiguate_2d": (
        "needs skimage.data.eagle(), which scikit-image downloads from GitHub at test time, "
        "not from the package index"
    ),
    "test_masked_phase_cross_correlation.py::test_masked_registration_3d_contiguous_mask": (
        "needs skimage.data.brain(), which scikit-image downloads from GitHub at test time, "
        "not from the package index"
    ),
    "test_phase_cross_correlation.py::test_mismatch_upsampled_region_size": (
        "tests scikit-image's private _upsampled_dft, which has no chunkreg counterpart"
    ),
    "test_phase_cross_correlation.py::test_mismatch_offsets_size": (
        "tests scikit-image's private _upsampled_dft, which has no chunkreg counterpart"
    ),
    "test_masked_phase_cross_correlation.py::test_cross_correlate_masked": (
        "tests scikit-image's private cross_correlate_masked, which has no chunkreg "
        "counterpart (chunkreg's masked registration is tested through the other tests)"
    ),
}

#: Test-id prefixes that must be among the passed tests (why this suite is run at all).
REQUIRED = [
    *(
        f"{name}.py::test_{case}"
        for name in ("test_ilk", "test_tvl1")
        for case in ("no_motion_2d", "no_motion_3d", "2d_motion", "3d_motion", "optical_flow")
    ),
    "test_phase_cross_correlation.py::test_subpixel_precision",
    "test_masked_phase_cross_correlation.py::test_masked_registration_random_masks",
]

#: tarfile's "data" filter (refuses links and absolute paths) where Python has it (3.10.12+).
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}

PYTEST_INI = """[pytest]
xfail_strict = true
filterwarnings =
    error
    # scikit-image's own parametrize over itertools.product, deprecated by pytest 9
    ignore:Passing a non-Collection iterable to parametrize:pytest.PytestDeprecationWarning
"""


def cache_root() -> Path:
    default = Path.home() / ".cache" / "chunkreg"
    return Path(os.environ.get("CHUNKREG_TEST_CACHE", default))


def sdist_link(package: str, version: str) -> tuple[str, str]:
    """URL and sha256 of ``package``'s sdist from the package index (PEP 691 JSON or the
    PEP 503 HTML page, whichever the index serves)."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    page = f"{index}/{package}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    request = urllib.request.Request(page, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        kind = response.headers.get("Content-Type", "")
        body = response.read()
    wanted = f"{package.replace('-', '_')}-{version}.tar.gz"
    if "json" in kind:
        for entry in json.loads(body)["files"]:
            if entry["filename"].lower() == wanted.lower():
                return entry["url"], entry["hashes"]["sha256"]
    else:
        link = re.search(
            rf'href="([^"]*/{re.escape(wanted)})#sha256=([0-9a-f]{{64}})"', body.decode(), re.I
        )
        if link:
            return urllib.parse.urljoin(page, link.group(1)), link.group(2)
    raise LookupError(f"{wanted} is not on {page}")


def fetch_suite() -> Path:
    """The unpacked ``tests/skimage`` tree of the installed version's sdist (cached)."""
    target = cache_root() / f"skimage-{SKIMAGE_VERSION}-tests"
    done = target / "complete"
    if done.exists():
        return target / "skimage"
    url, sha256 = sdist_link("scikit-image", SKIMAGE_VERSION)
    with urllib.request.urlopen(url, timeout=120) as response:
        payload = response.read()
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise OSError(f"the download of {url} does not match the index's sha256 {sha256}")
    pattern = re.compile(r"^[^/]+/tests/(skimage/(conftest\.py|registration/.+))$")
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        for member in archive.getmembers():
            match = pattern.match(member.name)
            if match and member.isfile() and ".." not in Path(match.group(1)).parts:
                member.name = match.group(1)
                archive.extract(member, partial, **SAFE_EXTRACT)
    (partial / "complete").write_text(f"{url}\n{sha256}\n")
    if target.exists() and not done.exists():  # left by an interrupted run
        shutil.rmtree(target, ignore_errors=True)
    try:
        partial.rename(target)
    except OSError:  # another process finished first (or a stale copy is in the way)
        shutil.rmtree(partial, ignore_errors=True)
        if not done.exists():
            raise
    return target / "skimage"


def run_suite(tests: Path, scratch: Path) -> subprocess.CompletedProcess:
    """Run scikit-image's registration tests with the redirect plugin; JUnit report in
    ``scratch / "report.xml"``."""
    registration = tests / "registration"
    ini = scratch / "pytest.ini"
    ini.write_text(PYTEST_INI)
    deselect = [f"--deselect={prefix}" for prefix in EXCLUDED]  # node ids from rootdir
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [env.get("PYTHONPATH")]), *sys.path]
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "skimage_redirect_plugin",
        "-c",
        str(ini),
        "--rootdir",
        str(registration),
        f"--confcutdir={tests}",  # scikit-image's conftest.py (fixture test_root_dir) is there
        f"--junitxml={scratch / 'report.xml'}",
        *deselect,
        ".",
    ]
    return subprocess.run(
        command, cwd=registration, env=env, capture_output=True, text=True, timeout=600
    )


def outcomes(report: Path) -> dict[str, str]:
    """``file::test[params]`` -> passed / failed / error / skipped, from a JUnit report."""
    result = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = child.tag
        result[f"{module}.py::{case.get('name')}"] = status
    return result


def test_scikit_image_registration_suite_passes_on_chunkreg(tmp_path):
    try:
        tests = fetch_suite()
    except (OSError, LookupError, ValueError, KeyError) as exc:  # URLError is an OSError
        reason = f"cannot fetch scikit-image {SKIMAGE_VERSION}'s sdist for its tests: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    run = run_suite(tests, tmp_path)
    report = tmp_path / "report.xml"
    assert report.exists(), run.stdout[-4000:] + run.stderr[-4000:]
    results = outcomes(report)
    assert "redirected to chunkreg" in run.stdout, "the redirect plugin was not loaded"
    not_passed = {name: status for name, status in results.items() if status != "passed"}
    assert not not_passed, f"{not_passed}\n{run.stdout[-6000:]}"
    missing = [p for p in REQUIRED if not any(name.startswith(p) for name in results)]
    assert not missing, f"expected scikit-image tests not run: {missing}"
    for prefix in EXCLUDED:  # an exclusion must name a test that exists
        file, name = prefix.split("::")
        assert f"def {name}" in (tests / "registration" / file).read_text(), prefix
    assert not any(name.startswith(tuple(EXCLUDED)) for name in results)
    assert run.returncode == 0, run.stdout[-4000:]
    assert len(results) >= 50

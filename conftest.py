"""Repository-wide pytest configuration.

- Docstring examples run in a temporary folder.
- ``shared_data``: the real image data in ``../shared/data`` beside the checkout. A test that
  needs it is skipped, with the missing folder named, where it is absent (a plain clone), and
  fails instead when ``CI`` is set, so CI always runs it.
"""

import os
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem


def _shared_data_root() -> Path:
    """``$CHUNKREG_SHARED_DATA``, else ``../shared/data`` beside this checkout or a folder above."""
    if os.environ.get("CHUNKREG_SHARED_DATA"):
        return Path(os.environ["CHUNKREG_SHARED_DATA"])
    root = Path(__file__).resolve().parent
    for parent in [root, *root.parents]:
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return root.parent / "shared" / "data"


SHARED_DATA = _shared_data_root()


@pytest.fixture(autouse=True)
def _doctest_in_tmp_path(request, tmp_path, monkeypatch):
    """Docstring examples write small zarr outputs by relative path: keep them out of the repo."""
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)


@pytest.fixture
def shared_data():
    """Return ``get(name)``: the folder ``name`` of the shared real data, or skip (fail in CI)."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if path.is_dir():
            return path
        message = (
            f"real data folder {path} is absent: it lives in ../shared/data beside the checkout "
            "(or set CHUNKREG_SHARED_DATA)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run this test")
        pytest.skip(message)

    return get

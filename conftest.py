"""Repository-wide pytest configuration: docstring examples run in a temporary folder."""

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_in_tmp_path(request, tmp_path, monkeypatch):
    """Docstring examples write small zarr outputs by relative path: keep them out of the repo."""
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)

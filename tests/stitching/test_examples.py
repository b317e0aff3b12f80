"""The Examples sections of the stitching docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["_layout", "_pairwise", "_solve", "_fuse", "_stitch"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write their zarr stores here
    module = importlib.import_module(f"chunkreg.stitching.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

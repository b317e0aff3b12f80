"""Run the code blocks of docs/phase_correlation.md so the page cannot rot."""

import re
from pathlib import Path

import numpy as np
import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "phase_correlation.md"


def test_page_has_examples():
    assert len(re.findall(r"```python\n", PAGE.read_text())) >= 6


def test_code_blocks_run(capsys):
    namespace: dict = {}
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    for number, block in enumerate(blocks):
        try:
            exec(compile(block, f"{PAGE.name}[block {number}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - reported with the block number
            pytest.fail(f"block {number} of {PAGE.name} failed: {exc!r}\n{block}")
    out = capsys.readouterr().out
    assert "[12.4  -7.75]" in out
    assert np.allclose(namespace["resolved"], [5, 80])

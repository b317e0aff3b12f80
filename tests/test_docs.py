"""The documentation's code examples run, and the site builds without warnings."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_pages_exist():
    names = {p.name for p in PAGES}
    assert {"index.md", "getting-started.md", "api.md", "performance.md"} <= names


@pytest.mark.parametrize(
    "page", [p for p in PAGES if BLOCK.search(p.read_text())], ids=lambda p: p.name
)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The README's example is a script (guarded by `if __name__ == "__main__"`): run it as one.
    namespace = {"__name__": "__main__" if page.name == "README.md" else f"docs_{page.stem}"}
    for number, block in enumerate(BLOCK.findall(page.read_text()), 1):
        code = compile(block, f"{page.name} example {number}", "exec")
        exec(code, namespace)


def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable))
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

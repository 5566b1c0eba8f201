"""The README's Development section keeps one line per module of both packages, and names no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_lists_every_module_once_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w/]+\.py)` \|", readme, re.MULTILINE)
    product = ROOT / "cmx_connect_exporter"
    modules = {str(path.relative_to(product)) for path in product.rglob("*.py") if path.name != "__init__.py"}
    modules |= {str(path.relative_to(ROOT)) for path in (ROOT / "cmx_simulator").rglob("*.py")
                if path.name != "__init__.py"}
    assert len(rows) == len(set(rows)), "a module listed twice"
    assert set(rows) == modules

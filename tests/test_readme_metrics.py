"""The README's sample of /metrics is a real, complete scrape of --demo: tools/readme_metrics.py --check."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from cmx_connect_exporter.counting.dimensions import ACTIVE_SESSIONS, DIMENSIONS
from cmx_connect_exporter.exposition.names import TARGET_LABEL

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "readme_metrics.py"
DEMO = ((TARGET_LABEL, "demo"),)  # the labels of the demo's one CMX


def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_metrics", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_sample() -> str:
    readme = (ROOT / "README.md").read_text()
    start, end = tool().readme_sample(readme)
    return readme[start:end]


def test_the_readme_sample_is_what_the_demo_serves() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sample_is_complete_and_adds_up() -> None:
    found = tool().series(readme_sample())
    total = found[(ACTIVE_SESSIONS, DEMO)]
    for dimension in DIMENSIONS:
        values = [value for (name, _), value in found.items() if name == dimension.metric]
        assert sum(values) == total, dimension.metric
    assert "..." not in readme_sample()


def test_the_check_sees_a_changed_count_a_dropped_series_and_a_new_help() -> None:
    module, sample = tool(), readme_sample()
    assert module.differences(sample, sample) == []
    lines = sample.splitlines(keepends=True)
    total = module.series(sample)[(ACTIVE_SESSIONS, DEMO)]
    series = f'{ACTIVE_SESSIONS}{{{TARGET_LABEL}="demo"}}'
    changed = sample.replace(f"\n{series} {total}\n", f"\n{series} {total + 1}\n")
    assert changed != sample
    assert any(f"{total} in the README, {total + 1} now" in problem for problem in module.differences(sample, changed))
    dropped = "".join(line for line in lines if 'reason="internal"' not in line)
    assert any(problem.startswith("only in the README") for problem in module.differences(sample, dropped))
    timestamps_only = "".join(line.replace("e+09", "1e+09") if line.startswith("cmx_connect_last_success") else line
                              for line in lines)
    assert module.differences(sample, timestamps_only) == [], "a new timestamp is not drift"

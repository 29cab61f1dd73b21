"""Every benchmark starts the way the README says to run it: ``python bench/X.py``.

Run as a script, a benchmark sees its own folder on the path, not the repository's
root; one that imports ``bench.*`` before putting the root there fails at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Modules of shared rig code, not scripts.
LIBRARIES = {"__init__", "fixture", "ingesters", "publisher", "report", "scratch"}
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.stem not in LIBRARIES)


def test_there_are_scripts() -> None:
    assert "ingest.py" in SCRIPTS
    assert "latency.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout

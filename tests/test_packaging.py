"""The package as users install it: the wheel built from the tracked files ships every module and data file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Tracked files that are about the repository, not the package: they stay out of the wheel.
NOT_SHIPPED_DIRS = ("tests/", "examples/", ".ci/")
NOT_SHIPPED_FILES = {".gitignore", "README.md", "pyproject.toml", "setup.py"}


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def test_the_wheel_ships_every_tracked_module_and_data_file(tmp_path):
    """Built from a copy of exactly the tracked files (a stale build/ folder in the checkout could hide a gap)."""
    tracked = _tracked()
    src = tmp_path / "src"
    for rel in tracked:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(src)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("loopwright-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("loopwright/") for n in names if n.startswith("loopwright/")}
    expected = {p for p in tracked if not p.startswith(NOT_SHIPPED_DIRS) and p not in NOT_SHIPPED_FILES}
    assert "runtime/learning/selfplay/__init__.py" in expected and "skills/bundled/handoff/SKILL.md" in expected
    assert sorted(expected - shipped) == [], "tracked but not in the wheel"
    assert sorted(shipped - expected) == [], "in the wheel but not tracked"
    assert all(n.startswith(("loopwright/", "loopwright-")) for n in names), "only the package and its metadata"


def test_python_dash_m_loopwright_is_the_command_line():
    out = subprocess.run([sys.executable, "-m", "loopwright", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("loopwright ")

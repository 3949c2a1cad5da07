"""The bundled skills (skills/bundled): valid Agent Skills front matter, and their scripts work end to end."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from support import git

BUNDLED = Path(__file__).resolve().parents[1] / "skills" / "bundled"
SKILLS = sorted(p for p in BUNDLED.iterdir() if p.is_dir() and (p / "SKILL.md").is_file())
OURS = {"experiment", "tdd-loop", "code-review", "handoff"}
ALLOWED_KEYS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
SCRIPTS = sorted(p for s in SKILLS for p in (s / "scripts").glob("*.py"))
STAMP = "2025-01-31_2359"
SECTIONS = ("What was observed", "What is concluded", "What is still unknown", "What to try next")


def split_skill(folder: Path) -> tuple[dict, str]:
    text = (folder / "SKILL.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "SKILL.md must start with YAML front matter"
    end = text.index("\n---\n", 4)
    front = yaml.safe_load(text[4:end])
    assert isinstance(front, dict), "front matter must be a mapping"
    return front, text[end + 5:]


def run(script: Path, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- the format -------------------------------------------------------------------------------------


def test_the_four_skills_are_bundled():
    assert OURS <= {p.name for p in SKILLS}


@pytest.mark.parametrize("folder", SKILLS, ids=lambda p: p.name)
def test_front_matter_follows_the_agent_skills_format(folder):
    front, body = split_skill(folder)
    assert set(front) <= ALLOWED_KEYS, f"unknown keys: {set(front) - ALLOWED_KEYS}"
    name = front.get("name")
    assert name == folder.name and isinstance(name, str)
    assert NAME.match(name) and len(name) <= 64
    description = front.get("description")
    assert isinstance(description, str) and 1 <= len(description.strip()) <= 1024
    assert "<" not in description and ">" not in description
    if "compatibility" in front:
        assert isinstance(front["compatibility"], str) and 1 <= len(front["compatibility"]) <= 500
    if "metadata" in front:
        assert isinstance(front["metadata"], dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in front["metadata"].items())
    assert len(body.splitlines()) <= 500
    if folder.name in OURS:
        assert front["license"] == "Apache-2.0"
        assert front["metadata"]["version"] == "1.0"
        assert len(body.split()) < 3000  # well under the ~5,000-token budget for a body


@pytest.mark.parametrize("folder", SKILLS, ids=lambda p: p.name)
def test_files_the_body_refers_to_exist_one_level_deep(folder):
    _, body = split_skill(folder)
    refs = set(re.findall(r"(?:(?<=\$SKILL/)|(?<![\w/.$-]))((?:scripts|references|assets)/[\w./-]+\.\w+)", body))
    assert refs or not any((folder / sub).is_dir() for sub in ("scripts", "references", "assets"))
    for ref in refs:
        assert ref.count("/") == 1, f"{ref}: keep file references one level deep"
        assert (folder / ref).is_file(), f"{folder.name}/SKILL.md refers to {ref}, which is missing"
    for sub in ("scripts", "references", "assets"):
        for path in (folder / sub).glob("[!_]*") if (folder / sub).is_dir() else ():  # not __pycache__
            assert f"{sub}/{path.name}" in body, f"{folder.name}: {sub}/{path.name} is never mentioned in SKILL.md"


@pytest.mark.parametrize("folder", [s for s in SKILLS if s.name in OURS], ids=lambda p: p.name)
def test_the_format_validator_accepts_the_skill(folder):
    try:
        fmt = importlib.import_module("loopwright.skills.format")
    except ModuleNotFoundError:
        pytest.skip("loopwright.skills.format does not exist yet")
    if not (hasattr(fmt, "validate_skill") and hasattr(fmt, "is_valid")):
        pytest.skip("loopwright.skills.format has no validate_skill/is_valid yet")
    diags = fmt.validate_skill(folder)
    assert fmt.is_valid(diags), diags
    levels = [getattr(d, "severity", None) or getattr(d, "level", None) or getattr(d, "kind", None) for d in diags]
    assert not [d for d, lv in zip(diags, levels) if lv in ("warning", "error")], diags


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_scripts_are_executable_stdlib_only_and_have_help(script, tmp_path):
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env python3\n")
    assert os.access(script, os.X_OK), f"chmod +x {script}"
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    proc = run(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage:" in proc.stdout


# -- experiment -------------------------------------------------------------------------------------

EXPERIMENT = BUNDLED / "experiment" / "scripts"


def new_experiment(root: Path, slug: str = "Sort speed vs N", env: dict | None = None) -> Path:
    proc = run(EXPERIMENT / "new_experiment.py", slug, "-q", "How does sorted() scale?", "--time", STAMP, cwd=root,
               env=env)
    assert proc.returncode == 0, proc.stderr
    folder = root / proc.stdout.splitlines()[0]
    assert folder == root / "experiments" / f"{STAMP}_sort-speed-vs-n"
    return folder


def check(folder: Path, cwd: Path) -> subprocess.CompletedProcess:
    proc = run(EXPERIMENT / "check_experiment.py", str(folder.relative_to(cwd)), cwd=cwd)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def fill_report(folder: Path) -> None:
    report = folder / "report.md"
    text = report.read_text(encoding="utf-8")
    for title in SECTIONS:
        text = text.replace(f"## {title}\n", f"## {title}\n\n{title}: a real sentence (data/summary.csv).\n")
    report.write_text(text, encoding="utf-8")


def without_matplotlib(tmp_path: Path) -> dict:
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    return {**os.environ, "PYTHONPATH": str(shadow.parent)}


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_new_experiment_creates_the_layout(tmp_path):
    folder = new_experiment(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["data", "figures", "report.md", "run.py"]
    assert os.access(folder / "run.py", os.X_OK)
    report = (folder / "report.md").read_text()
    assert "How does sorted() scale?" in report
    assert all(f"## {s}" in report for s in SECTIONS)
    ast.parse((folder / "run.py").read_text())


def test_experiment_end_to_end_without_matplotlib(tmp_path):
    env = without_matplotlib(tmp_path)
    folder = new_experiment(tmp_path, env=env)
    proc = check(folder, tmp_path)
    assert proc.returncode == 1 and "data: no CSV files" in proc.stdout

    proc = run(folder / "run.py", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    for path in (folder / "data").glob("*.csv"):
        rows = list(csv.reader(path.open(newline="")))
        assert len(rows) > 1 and len({len(r) for r in rows}) == 1, path
    assert {p.name for p in (folder / "data").iterdir()} == {"environment.csv", "raw.csv", "summary.csv"}
    assert not list((folder / "figures").iterdir())
    report = (folder / "report.md").read_text()
    assert "> run.py: matplotlib is not installed, so no figures were drawn" in report

    proc = check(folder, tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.count("is empty") == 4  # the four sections are still comments only
    assert f"experiments/{STAMP}_sort-speed-vs-n/report.md:" in proc.stdout

    fill_report(folder)
    proc = check(folder, tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("ok: ")

    run(folder / "run.py", cwd=folder, env=env)  # re-running keeps a single note line
    assert (folder / "report.md").read_text().count("> run.py:") == 1


def test_experiment_end_to_end_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    folder = new_experiment(tmp_path)
    proc = run(folder / "run.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pngs = list((folder / "figures").glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "> run.py:" not in (folder / "report.md").read_text()
    fill_report(folder)
    assert check(folder, tmp_path).returncode == 0


@pytest.fixture
def good_experiment(tmp_path) -> Path:
    env = without_matplotlib(tmp_path)
    folder = new_experiment(tmp_path, env=env)
    assert run(folder / "run.py", cwd=tmp_path, env=env).returncode == 0
    (folder / "figures" / "seconds_by_param.png").write_bytes(tiny_png())
    fill_report(folder)
    assert check(folder, tmp_path).returncode == 0
    return folder


def test_check_fails_on_an_empty_section(good_experiment, tmp_path):
    report = good_experiment / "report.md"
    text = report.read_text()
    text = text.replace("What is concluded: a real sentence (data/summary.csv).\n", "TODO\n")
    report.write_text(text)
    proc = check(good_experiment, tmp_path)
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if "What is concluded" in ln)
    number = text.splitlines().index("## What is concluded") + 1
    assert line.startswith(f"experiments/{STAMP}_sort-speed-vs-n/report.md:{number}: ")
    assert "is empty" in line
    assert len(proc.stdout.splitlines()) == 1


def test_check_fails_on_a_missing_section(good_experiment, tmp_path):
    report = good_experiment / "report.md"
    report.write_text(report.read_text().replace("## What to try next", "## Later"))
    proc = check(good_experiment, tmp_path)
    assert proc.returncode == 1 and "missing section '## What to try next'" in proc.stdout


def test_check_fails_on_a_ragged_csv(good_experiment, tmp_path):
    raw = good_experiment / "data" / "raw.csv"
    lines = raw.read_text().splitlines()
    raw.write_text("\n".join([*lines, "7,8"]) + "\n")
    proc = check(good_experiment, tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.strip() == (f"experiments/{STAMP}_sort-speed-vs-n/data/raw.csv:{len(lines) + 1}: "
                                   f"row has 2 fields but the header has 3")


def test_check_reports_each_problem_on_its_own_line(good_experiment, tmp_path):
    (good_experiment / "figures" / "broken.png").write_bytes(b"GIF89a not a png")
    (good_experiment / "data" / "empty.csv").write_text("")
    (good_experiment / "second.py").write_text("print(1)\n")
    report = good_experiment / "report.md"
    report.write_text(report.read_text() + "\nSee figures/missing.png.\n")
    proc = check(good_experiment, tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, lines
    assert any("figures/broken.png: not a PNG file" in ln for ln in lines)
    assert any("data/empty.csv: empty" in ln for ln in lines)
    assert any("2 scripts (run.py, second.py)" in ln for ln in lines)
    assert any("refers to figures/missing.png" in ln for ln in lines)


def test_check_rejects_a_badly_named_folder(good_experiment, tmp_path):
    renamed = good_experiment.with_name("my experiment")
    good_experiment.rename(renamed)
    proc = check(renamed, tmp_path)
    assert proc.returncode == 1 and "folder name should be YYYY-MM-DD_HHMM_<slug>" in proc.stdout


def test_experiment_scripts_fail_in_one_line(tmp_path):
    proc = run(EXPERIMENT / "check_experiment.py", "nowhere", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout.strip() == "nowhere: not a folder"
    new_experiment(tmp_path)
    proc = run(EXPERIMENT / "new_experiment.py", "sort speed vs n", "--time", STAMP, cwd=tmp_path)
    assert proc.returncode == 1 and "already exists" in one_line_error(proc)
    proc = run(EXPERIMENT / "new_experiment.py", "x", "--time", "yesterday", cwd=tmp_path)
    assert proc.returncode == 1 and "YYYY-MM-DD_HHMM" in one_line_error(proc)
    proc = run(EXPERIMENT / "new_experiment.py", "???", cwd=tmp_path)
    assert proc.returncode == 1 and "no letters or digits" in one_line_error(proc)


# -- code-review: diff_stats.py ---------------------------------------------------------------------

DIFF_STATS = BUNDLED / "code-review" / "scripts" / "diff_stats.py"


@pytest.fixture
def history(tmp_path) -> Path:
    """main: app.py + tests; branch feat: app.py edited, big.py added (one 150-line hunk), notes renamed."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Test User")
    git(root, "config", "user.email", "test@example.invalid")
    (root / "app.py").write_text("def add(a, b):\n    return a - b\n\n\ndef name():\n    return 'app'\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text("from app import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    (root / "notes.txt").write_text("some notes that stay the same\n" * 5)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    git(root, "switch", "-q", "-c", "feat")
    (root / "app.py").write_text("def add(a, b):\n    return a + b\n\n\ndef name():\n    return 'app'\n\n\n"
                                 "def sub(a, b):\n    return a - b\n")
    (root / "big.py").write_text("".join(f"X{i} = {i}\n" for i in range(150)))
    git(root, "mv", "notes.txt", "NOTES.md")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fix add, add sub and constants")
    return root


def diff_stats(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run(DIFF_STATS, *args, cwd=repo)


def test_diff_stats_lists_files_and_flags(history):
    proc = diff_stats(history, "main...HEAD", "--hunks")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("diff main...HEAD: 3 file(s) changed")
    assert "      5       1  app.py\n" in out
    assert "    150       0  big.py  [added]\n" in out
    assert "      0       0  NOTES.md (from notes.txt)  [renamed]\n" in out
    assert "app.py:2  +1 -1" in out and "app.py:7-10  +4 -0" in out
    assert "    155       1  total, 3 hunk(s)" in out
    assert "LARGE HUNK  big.py:1-150  (+150 -0 in one hunk)" in out
    assert "NO TESTS    2 source file(s) changed, no test file did" in out


def test_diff_stats_json_matches_git_numstat(history):
    proc = diff_stats(history, "main...HEAD", "--json", "--large-hunk", "200")
    data = json.loads(proc.stdout)
    numstat = {ln.split("\t")[2]: (int(ln.split("\t")[0]), int(ln.split("\t")[1]))
               for ln in git(history, "diff", "--numstat", "main...HEAD").splitlines()}
    assert {f["path"]: (f["added"], f["removed"]) for f in data["files"] if not f["old_path"]} == {
        k: v for k, v in numstat.items() if "=>" not in k}
    assert (data["added"], data["removed"]) == (155, 1)
    assert not any(f.startswith("LARGE HUNK") for f in data["flags"])
    big = next(f for f in data["files"] if f["path"] == "big.py")
    assert big["kind"] == "added" and big["hunks"] == [{"start": 1, "end": 150, "added": 150, "removed": 0}]


def test_diff_stats_sees_tests_and_uncommitted_changes(history):
    (history / "tests" / "test_app.py").write_text(
        (history / "tests" / "test_app.py").read_text() + "\n\ndef test_sub():\n    assert True\n")
    git(history, "commit", "-q", "-am", "test sub")
    proc = diff_stats(history, "main...HEAD")
    assert "tests/test_app.py  [test]" in proc.stdout and "NO TESTS" not in proc.stdout
    assert diff_stats(history).stdout.strip() == "no changes in HEAD (uncommitted changes)"
    (history / "app.py").write_text("changed\n")
    proc = diff_stats(history, "HEAD~1", "HEAD")
    assert "tests/test_app.py" in proc.stdout and "app.py" not in proc.stdout.replace("test_app.py", "")
    proc = diff_stats(history)
    assert proc.stdout.startswith("diff HEAD (uncommitted changes): 1 file(s) changed")


def test_diff_stats_errors_are_one_line(history, tmp_path):
    proc = diff_stats(history, "no-such-branch...HEAD")
    assert proc.returncode == 2 and one_line_error(proc).startswith("error: git diff no-such-branch...HEAD: ")
    proc = diff_stats(history, "--", "--output=/tmp/x")
    assert proc.returncode == 2 and "is not a revision or range" in one_line_error(proc)
    elsewhere = tmp_path / "plain"
    elsewhere.mkdir()
    proc = run(DIFF_STATS, "main", cwd=elsewhere, env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert proc.returncode == 2 and one_line_error(proc) == "error: not a git repository: ."

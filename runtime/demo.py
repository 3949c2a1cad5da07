"""The offline demo (`loopwright demo`; cli/runs.py prints it): the real runtime on a throwaway repository, driven
by a scripted model.

It makes a small Python project with two failing tests in a temporary git
repository and runs one task through the same code as `loopwright run`:
worktree, checkpoints, a rollback requested by a (simulated) supervisor, a
failed acceptance check fed back to the agent, a passing one, the squash merge,
and reflection writing lessons. Nothing here is a model: the turns are a script, and the output says so.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopwright.harness.events import ToolFinished
from loopwright.harness.script import Script
from loopwright.memory.store import Run
from loopwright.runtime.display import ProgressPrinter
from loopwright.runtime.project import init_project, open_project
from loopwright.runtime.runner import Runner

STATS_PY = '''"""Small statistics helpers."""


def mean(values):
    """Arithmetic mean of a non-empty list."""
    return sum(values) / (len(values) - 1)


def median(values):
    """Middle value; the mean of the two middle values for an even count."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
'''

TEST_STATS_PY = '''import unittest

from stats import mean, median


class StatsTest(unittest.TestCase):
    def test_mean(self):
        self.assertEqual(mean([1, 2, 3, 6]), 3)

    def test_median_odd(self):
        self.assertEqual(median([3, 1, 2]), 2)

    def test_median_even(self):
        self.assertEqual(median([4, 1, 3, 2]), 2.5)


if __name__ == "__main__":
    unittest.main()
'''

GOAL = "The unit tests fail (python3 -m unittest). Fix stats.py so that they pass; do not change the tests."
MEDIAN_LINE = "    return ordered[len(ordered) // 2]"
MEDIAN_FIX = ("    mid = len(ordered) // 2\n    if len(ordered) % 2:\n        return ordered[mid]\n"
              "    return (ordered[mid - 1] + ordered[mid]) / 2")


def _turn(text: str, *calls: tuple[str, dict], expect: str | None = None, tokens: tuple[int, int] = (900, 60)) -> dict:
    turn: dict = {"text": text, "tool_calls": [{"name": n, "arguments": a} for n, a in calls],
                  "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}
    if expect:
        turn["expect"] = expect
    return turn


DEMO_SCRIPT = [
    _turn("Let me see what is in the project.", ("list_files", {})),
    _turn("Reading the module under test.", ("read_file", {"path": "stats.py"}), expect="stats.py"),
    _turn("Running the tests to see what fails.", ("shell", {"command": "python3 -m unittest -q 2>&1"}),
          expect="def mean"),
    _turn("Two failures: mean divides by n-1, median ignores even counts. Trying median first.",
          ("edit_file", {"path": "stats.py", "old": MEDIAN_LINE, "new": "    return ordered[len(ordered) // 2 - 1]"}),
          expect="FAILED"),
    _turn("My median change was rolled back by the supervisor. Fixing mean first.",
          ("edit_file", {"path": "stats.py", "old": "sum(values) / (len(values) - 1)", "new": "sum(values) / len(values)"}),
          expect="rolled back"),
    _turn("mean is fixed.", ("finish", {"summary": "Fixed mean: divide by n."})),
    _turn("The check still fails on median for even counts; averaging the middle pair.",
          ("edit_file", {"path": "stats.py", "old": MEDIAN_LINE, "new": MEDIAN_FIX}), expect="failed"),
    _turn("Running the tests again.", ("shell", {"command": "python3 -m unittest -q 2>&1"})),
    _turn("All tests pass.",
          ("scratchpad", {"action": "append", "text": "mean: divide by n. median: average the middle pair when n is even."}),
          ("finish", {"summary": "Fixed mean (divide by n) and median (even counts)."}), expect="OK"),
]


# The scripted reply to the reflection call after the run: lesson deltas, as a model would send them.
DEMO_REFLECTION = {"operations": [
    {"op": "add", "tags": ["stats", "tests"],
     "text": "stats.py: run `python3 -m unittest` before editing; fix one failing function at a time and rerun."},
    {"op": "add", "tags": ["stats"],
     "text": "median of an even count is the mean of the two middle values; check both odd and even cases."},
]}


def make_demo_repo(where: Path) -> Path:
    """A git repository holding the little project with failing tests."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "stats.py").write_text(STATS_PY)
    (where / "test_stats.py").write_text(TEST_STATS_PY)
    (where / "README.md").write_text("# stats\n\nA tiny project for the loopwright demo.\n")

    def git(*a: str) -> None:
        subprocess.run(["git", *a], cwd=where, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Demo User")
    git("config", "user.email", "demo@example.invalid")
    git("add", "-A")
    git("commit", "-q", "-m", "stats: first version (tests fail)")
    return where


@dataclass
class Demo:
    """What the demo did: its run, where everything is, and what the output says about it."""

    run: Run
    repository: Path
    store: Path  # the project's state.db
    how: str  # how the turns were served (always: not a model)
    checkpoints: int
    events: int  # the run's events in the store
    merged: str  # the target branch's last commit, one line
    lessons: int  # active lessons after reflection


def run_demo(*, via: str = "scripted", where: Path | None = None, say: Callable[[str], None] = lambda s: None,
             progress: bool = False) -> Demo:
    """Make the demo repository (in `where`, else a new temporary folder) and run the demo task in it; `say` gets
    the lines that set the scene and the supervisor's rollback, `progress` prints the run's progress as it goes."""
    root = make_demo_repo(where or Path(tempfile.mkdtemp(prefix="loopwright-demo-")))
    init_project(root)
    script_path = root / ".loopwright" / "demo-script.json"
    script_path.write_text(json.dumps({"turns": DEMO_SCRIPT, "reflections": [DEMO_REFLECTION]}, indent=1))
    Script.load(script_path)  # fail here, loudly, if the script itself is malformed

    server = None
    if via == "scripted":
        overrides = {"provider": "scripted", "model": "scripted", "script": str(script_path)}
        how = "scripted model, no API key used"
    else:
        from loopwright.harness.loopback import LoopbackServer

        server = LoopbackServer(Script.load(script_path)).__enter__()
        base = server.anthropic_base_url if via == "anthropic" else server.openai_base_url
        overrides = {"provider": via, "model": "loopback-scripted", "base_url": base}
        how = f"scripted turns served over the {via} wire format by the loopback server at {server.base_url}; no API key used"
    try:
        project = open_project(root, overrides=overrides)
        say(f"loopwright demo — {how}")
        say(f"repository: {root} (a small Python project whose tests fail)")
        say(f"task: {GOAL}\n")
        if progress:
            project.store.listeners.append(ProgressPrinter(project.store))
        project.store.listeners.append(_Supervisor(project.store, say))
        check = f"{shlex.quote(sys.executable)} -m unittest -q"
        result = asyncio.run(Runner(project).start(GOAL, check=check, title="Fix the failing statistics tests"))
    finally:
        if server is not None:
            server.__exit__(None, None, None)

    run = result.run
    cps = project.store.checkpoints(run.id)
    events = project.store.conn.execute("SELECT count(*) FROM events WHERE run_id = ?", (run.id,)).fetchone()[0]
    log = subprocess.run(["git", "log", "--oneline", "-1", run.target_branch], cwd=root, capture_output=True,
                         text=True).stdout.strip()
    return Demo(run=run, repository=root, store=project.db_path, how=how, checkpoints=len(cps), events=events,
                merged=log, lessons=_lessons_learned(project))


def _lessons_learned(project) -> int:
    return project.store.conn.execute("SELECT count(*) FROM lessons WHERE status = 'active'").fetchone()[0]


class _Supervisor:
    """Plays the person at the terminal: after the agent's first (wrong) edit, it asks for a rollback."""

    def __init__(self, store, say):
        self.store, self.say, self.done = store, say, False

    def __call__(self, run_id, event) -> None:
        if self.done or not isinstance(event, ToolFinished) or event.name != "edit_file" or event.is_error:
            return
        self.done = True
        base = self.store.run(run_id).base_commit
        self.say(f"        [demo] a supervisor (simulated) dislikes that edit: loopwright rollback {run_id} --to 0")
        self.store.enqueue_command(run_id, "rollback", {"sha": base, "seq": 0, "by": "demo supervisor"})

"""The `repo` domain: tasks grounded in the project itself — its code, its tests, its open TODOs, its skills.

The proposer is shown the project's files, its TODO/FIXME lines and its
skills, and replies with JSON (one object, a list, or `{"tasks": [...]}`):

    {"statement": "calc.double rejects strings with a TypeError naming the type.",
     "cites": ["calc.py"],                       # files of the project the task is about (they must exist)
     "tests": "from calc import double\\ndef test_rejects_str():\\n    ...",   # hidden tests: test_* functions
     "reference_patch": "diff --git a/calc.py b/calc.py\\n...",             # a unified diff that solves it
     "kind": "calc"}

Gates (in a temporary detached worktree of HEAD): it parses, cites at least
one file and every cited file exists (`ungrounded`); size caps; no banned API
in the tests (the project's own modules, os, sys, pathlib, io, tempfile and
shutil are allowed; randomness, time, the network and processes are not); the
hidden tests fail on the project as it is (else the task is already done:
`trivial`); the reference patch applies and then the hidden tests pass within
the time limit (`reference_fails`, `timeout`), with the same results under every
condition of sandbox.CONDITIONS (`nondeterministic`), and the project's own suite (`check` in the config)
still passes (`reference_fails`); not a duplicate of an archived task
(statement and tests, as gates.py). The verifier for the solver is the hidden
tests plus the project's own suite.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loopwright.harness.sandbox import Sandbox
from loopwright.runtime.learning.selfplay.domain import (
    Archive,
    Domain,
    PracticeTask,
    ProposalRequest,
    Verdict,
    parse_payload,
    task_id,
)
from loopwright.runtime.learning.selfplay.gates import GateConfig, banned_apis, features, size_problem, static_duplicate
from loopwright.runtime.learning.selfplay.python_functions import count_tests
from loopwright.runtime.learning.selfplay.sandbox import CONDITIONS, Conditions, run_job

NAME = "repo"
REPO_ALLOWED = frozenset({"os", "sys", "pathlib", "io", "tempfile", "shutil", "importlib", "inspect"})
TODO = re.compile(r"\b(TODO|FIXME|XXX)\b[:\s]*(.*)")


class RepoProposal(BaseModel):
    model_config = ConfigDict(extra="ignore")
    statement: str = Field(min_length=1)
    cites: list[str] = Field(default_factory=list)
    tests: str = Field(min_length=1)
    reference_patch: str = Field(min_length=1)
    kind: str = "repo"
    predicted_success: float | None = None


def _git(root: Path, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, input=input, timeout=timeout)


def grounding(root: Path, *, files: int = 200, todos: int = 30) -> str:
    """What the proposer is shown of the project: tracked files, TODO/FIXME lines, skills."""
    listed = _git(root, "ls-files").stdout.splitlines()
    lines = ["Files of the project:"] + [f"- {f}" for f in listed[:files]]
    if len(listed) > files:
        lines.append(f"- ... and {len(listed) - files} more")
    found = []
    for f in listed:
        if not f.endswith((".py", ".md", ".toml", ".txt", ".js", ".ts")) or len(found) >= todos:
            continue
        try:
            for n, line in enumerate((root / f).read_text(errors="replace").splitlines(), 1):
                if m := TODO.search(line):
                    found.append(f"- {f}:{n}: {m.group(0)[:160]}")
                    if len(found) >= todos:
                        break
        except OSError:
            continue
    if found:
        lines += ["Open TODOs:"] + found
    try:
        from loopwright.skills.catalog import discover

        skills = [e for e in discover(root).entries if e.scope == "project"]
        if skills:
            lines += ["Skills of the project:"] + [f"- {e.name}: {e.skill.description[:160]}" for e in skills[:30]]
    except Exception:  # noqa: BLE001 — grounding is best effort
        pass
    return "\n".join(lines)


class _Worktree:
    """A temporary detached worktree of HEAD (removed on exit)."""

    def __init__(self, root: Path):
        self.root = root
        self.folder = Path(tempfile.mkdtemp(prefix="lw-selfplay-repo-"))
        self.path = self.folder / "tree"

    def __enter__(self) -> Path:
        from loopwright.runtime.merging import GIT_LOCK

        with GIT_LOCK:
            done = _git(self.root, "worktree", "add", "--detach", str(self.path), "HEAD")
        if done.returncode != 0:
            raise RuntimeError(f"git worktree add failed: {done.stderr.strip()}")
        return self.path

    def __exit__(self, *exc: Any) -> None:
        from loopwright.runtime.merging import GIT_LOCK

        with GIT_LOCK:
            _git(self.root, "worktree", "remove", "--force", str(self.path))
            _git(self.root, "worktree", "prune")
        shutil.rmtree(self.folder, ignore_errors=True)


def run_hidden(tests: str, tree: Path, limit: float, conditions: Conditions = CONDITIONS[0], *,
               sandbox: Sandbox | None = None, repo_root: Path | None = None) -> dict:
    """The hidden tests against the project in `tree` (in `sandbox`'s jail): {passed, timeout, error, results}."""
    result = run_job([{"label": "tests", "code": None, "name": "", "tests": tests, "path": str(tree)}],
                     limit=limit, wall=limit + 10, conditions=conditions, cwd=tree, sandbox=sandbox,
                     repo_root=repo_root)
    run = result.by_label().get("tests")
    if result.timed_out or (run and run.get("timeout")):
        return {"passed": False, "timeout": True, "error": "timeout"}
    if run is None:
        return {"passed": False, "error": f"the sandbox crashed: {result.crashed[-200:]}"}
    return run


def run_suite(check: str | None, tree: Path, timeout: float, *, sandbox: Sandbox | None = None,
              repo_root: Path | None = None) -> tuple[bool, str]:
    """The project's own suite (`check`) in `tree`, in `sandbox`'s jail when given."""
    if not check:
        return True, "no project suite configured"
    argv, env = (sandbox.wrap(check, worktree=tree, repo_root=repo_root) if sandbox is not None
                 else (["/bin/sh", "-c", check], None))
    try:
        done = subprocess.run(argv, cwd=tree, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"the project's suite `{check}` timed out after {timeout:.0f}s"
    return done.returncode == 0, (done.stdout + done.stderr)[-500:]


class RepoDomain(Domain):
    """Tasks about this project, verified by hidden tests plus the project's own suite."""

    name = NAME

    def __init__(self, root: Path, *, check: str | None = None, gates: GateConfig | None = None,
                 suite_timeout: float = 600.0):
        self.root, self.check, self.suite_timeout = Path(root), check, suite_timeout
        self.gates = gates or GateConfig(time_limit=30.0, max_reference_chars=20_000)
        self.allowed_modules = REPO_ALLOWED | frozenset(self.gates.allowed_modules)

    def prompt(self, request: ProposalRequest) -> str:
        lines = [f"Write {request.count} task(s) about THIS project for another coding agent (the solver), each "
                 f"solved with probability about {request.target:.0%}: real work on the project's code (a missing "
                 f"feature, a bug, an open TODO, a test gap), not trivia, and hard because of what it asks, not "
                 f"because it is long.",
                 "Reply with JSON only: {\"tasks\": [{\"statement\": ..., \"cites\": [paths], \"tests\": ..., "
                 "\"reference_patch\": ..., \"kind\": ...}]}",
                 "- cites: the project files the task is about (they must exist).",
                 "- tests: Python test_* functions with assert that import the project's modules; they must fail on "
                 "the project as it is and pass once the task is done; deterministic (no randomness, time, network).",
                 "- reference_patch: a unified diff (git diff format, paths a/... b/...) that does the task; with it "
                 "the tests and the project's own suite pass.",
                 "", request.grounding or grounding(self.root)]
        if request.examples:
            lines.append("\nEarlier tasks with the solver's measured success rate (aim between them):")
            for ex in request.examples:
                lines.append(f"- measured {ex.get('measured', 0):.0%}: {ex['statement'][:300]}")
        return "\n".join(lines)

    def parse(self, text: str) -> list[RepoProposal]:
        return parse_payload(text, RepoProposal)

    def _validate(self, p: RepoProposal, archive: Archive, round: int) -> Verdict:
        cfg = self.gates
        try:
            ast.parse(p.tests)
        except SyntaxError as e:
            return Verdict.reject("unparseable", f"the tests do not parse: {e.msg} (line {e.lineno})")
        if not p.cites:
            return Verdict.reject("ungrounded", "the task cites no file of the project")
        tracked = set(_git(self.root, "ls-files").stdout.splitlines())
        missing = [c for c in p.cites if c.strip("/") not in tracked and not (self.root / c).is_dir()]
        if missing:
            return Verdict.reject("ungrounded", f"cited files that are not in the project: {', '.join(missing[:5])}")
        if problem := size_problem(cfg, p.statement, p.tests, p.reference_patch):
            return Verdict.reject("too_long", problem)
        if banned := banned_apis(p.tests, self.allowed_modules):
            return Verdict.reject("banned_api", ", ".join(banned))
        if not count_tests(p.tests):
            return Verdict.reject("no_tests", "the tests define no test* function and no assert")
        f = features(p.statement, p.tests)
        task = PracticeTask(id=task_id(NAME, f["ast_hash"], p.statement), domain=NAME, kind=p.kind or "repo",
                            statement=p.statement, created_round=round,
                            payload={"cites": p.cites, "tests": p.tests, "reference_patch": p.reference_patch,
                                     "check": self.check},
                            meta={"predicted_success": p.predicted_success}, **f)
        if dup := static_duplicate(task, archive, cfg):
            return dup
        with _Worktree(self.root) as tree:
            jail = {"sandbox": self.sandbox, "repo_root": self.root}
            before = run_hidden(p.tests, tree, cfg.time_limit, **jail)
            if before.get("timeout"):
                return Verdict.reject("timeout", f"the hidden tests did not finish within {cfg.time_limit:.0f}s")
            if before.get("passed"):
                return Verdict.reject("trivial", "the hidden tests already pass on the project as it is")
            applied = _git(tree, "apply", "--whitespace=nowarn", "-", input=p.reference_patch)
            if applied.returncode != 0:
                return Verdict.reject("reference_fails", f"the reference patch does not apply: "
                                                         f"{applied.stderr.strip()[:200]}")
            first = None
            for conditions in CONDITIONS:  # the conditions the verifier runs a solution under
                got = run_hidden(p.tests, tree, cfg.time_limit, conditions, **jail)
                if got.get("timeout"):
                    return Verdict.reject("timeout", f"the hidden tests did not finish within {cfg.time_limit:.0f}s "
                                                     f"({conditions.describe()})")
                if first is None:
                    first = got
                    if not got.get("passed"):
                        return Verdict.reject("reference_fails",
                                              got.get("error") or "the reference fails the hidden tests")
                elif got.get("results") != first.get("results"):
                    return Verdict.reject("nondeterministic", f"the hidden tests' results differ between "
                                                              f"{CONDITIONS[0].describe()} and {conditions.describe()}")
            ok, out = run_suite(self.check, tree, self.suite_timeout, **jail)
            if not ok:
                return Verdict.reject("reference_fails", f"with the reference patch the project's own suite fails: "
                                                         f"{out[-200:]}")
        return Verdict(True, task=task)

    def solver_goal(self, task: PracticeTask) -> str:
        cites = ", ".join(task.payload.get("cites", []))
        return (f"{task.statement}\n\nThe task is about: {cites}. Hidden tests (not in the repository) decide whether "
                f"it is done, together with the project's own test suite, which must keep passing.")

    def verify(self, task: PracticeTask, workdir: Path) -> tuple[bool, str]:
        for conditions in CONDITIONS:  # those the gates ran the reference under
            result = run_hidden(task.payload["tests"], Path(workdir), self.gates.time_limit, conditions,
                                sandbox=self.sandbox)
            results = {k: v for k, v in (result.get("results") or {}).items() if k != "<module>"}
            detail = f"hidden tests: {sum(1 for v in results.values() if v)} of {len(results)} passed"
            where = "" if conditions == CONDITIONS[0] else f", under {conditions.describe()}"
            if result.get("timeout"):
                return False, f"the hidden tests timed out{where}"
            if not result.get("passed"):
                return False, detail + where
        ok, out = run_suite(task.payload.get("check"), Path(workdir), self.suite_timeout, sandbox=self.sandbox)
        return (True, detail + "; the project's suite passes") if ok else (False, detail + "; the project's suite "
                                                                                   "fails:\n" + out[-1500:])

"""Self-play domains added by skills: a skill's metadata names a domain and a verifier script.

    ---
    name: sql-practice
    description: ...
    metadata:
      selfplay-domain: sql            # `loopwright selfplay --domain sql`
      selfplay-verifier: scripts/verify.py   # relative to the skill's folder
    ---

A proposal is JSON: `{"statement", "files": {path: content}, "tests", "kind"}`
— `files` is the reference solution, `tests` the hidden material the verifier
reads. The verifier is run as `python VERIFIER SOLUTION_DIR TESTS_FILE` (cwd:
the solution folder); exit 0 means solved. Given the project's sandbox it runs
in a jail around the solution folder that shows besides only the skill's
folder and the hidden tests (read-only). Gates: it parses; size caps; no
banned API in tests that are Python; the reference passes within the time
limit (`timeout`, `reference_fails`), with the same verdict and output under
every condition of sandbox.CONDITIONS, the clock set by a `sitecustomize`
(`nondeterministic`), and `verify` runs a solution under the same ones, all
in the domain's sandbox; an empty solution and
the reference's files emptied both fail (`trivial`); not a duplicate
(gates.py, on statement and tests). Skills are found as the catalog finds them
(project skills only in a trusted repository: `loopwright trust`).
"""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from loopwright.harness.sandbox import Sandbox
from loopwright.runtime.learning.selfplay.domain import (
    Archive,
    Domain,
    PracticeTask,
    ProposalRequest,
    Verdict,
    parse_payload,
    shingles,
    task_id,
    words,
)
from loopwright.runtime.learning.selfplay.gates import GateConfig, banned_apis, features, size_problem, static_duplicate
from loopwright.runtime.learning.selfplay.sandbox import CONDITIONS, Conditions, jailed, sitecustomize

DOMAIN_KEY, VERIFIER_KEY = "selfplay-domain", "selfplay-verifier"


class SkillProposal(BaseModel):
    model_config = ConfigDict(extra="ignore")
    statement: str = Field(min_length=1)
    files: dict[str, str] = Field(min_length=1)
    tests: str = Field(min_length=1)
    kind: str = "general"


def _safe(rel: str) -> bool:
    p = Path(rel)
    return not p.is_absolute() and ".." not in p.parts and bool(rel.strip())


def run_verifier(verifier: Path, files: dict[str, str] | None, tests: str, *, limit: float,
                 conditions: Conditions = CONDITIONS[0], workdir: Path | None = None,
                 sandbox: Sandbox | None = None) -> tuple[bool | None, str]:
    """(passed, output) of the verifier on `files` written to a fresh folder, or on `workdir`, under `conditions`
    (its clock set by a `sitecustomize`), in `sandbox`'s jail with the network off; None on timeout."""
    with tempfile.TemporaryDirectory(prefix="lw-selfplay-skill-") as tmp:
        sol = workdir or Path(tmp) / "solution"
        if workdir is None:
            sol.mkdir()
            for rel, content in (files or {}).items():
                (sol / rel).parent.mkdir(parents=True, exist_ok=True)
                (sol / rel).write_text(content)
        tests_file = Path(tmp) / "hidden_tests"
        tests_file.write_text(tests)
        env = sitecustomize(Path(tmp), conditions)
        argv, env = jailed([sys.executable, str(verifier), str(sol), str(tests_file)], sandbox, sol, env,
                           readable=[Path(tmp), verifier.parent])
        try:
            done = subprocess.run(argv, cwd=sol, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return None, "timeout"
        return done.returncode == 0, (done.stdout + done.stderr)[-1000:]


class SkillDomain(Domain):
    """A domain whose verifier is a skill's script."""

    def __init__(self, name: str, verifier: Path, skill: str, gates: GateConfig | None = None):
        self.name, self.verifier, self.skill = name, Path(verifier), skill
        self.gates = gates or GateConfig(time_limit=30.0)

    def prompt(self, request: ProposalRequest) -> str:
        lines = [f"Write {request.count} practice task(s) for the `{self.name}` domain (skill {self.skill}), each "
                 f"solved by the solver with probability about {request.target:.0%}, hard because of what it asks, "
                 f"not because it is long.",
                 "Reply with JSON only: {\"tasks\": [{\"statement\": ..., \"files\": {path: content}, \"tests\": ..., "
                 "\"kind\": ...}]} — files: a reference solution; tests: what the domain's verifier checks it with."]
        for ex in request.examples:
            lines.append(f"- measured {ex.get('measured', 0):.0%}: {ex['statement'][:300]}")
        return "\n".join(lines)

    def parse(self, text: str) -> list[SkillProposal]:
        return parse_payload(text, SkillProposal)

    def _validate(self, p: SkillProposal, archive: Archive, round: int) -> Verdict:
        cfg = self.gates
        if not all(_safe(rel) for rel in p.files):
            return Verdict.reject("unparseable", "file paths must be relative and stay inside the solution folder")
        reference = "\n".join(f"# {k}\n{v}" for k, v in sorted(p.files.items()))
        if problem := size_problem(cfg, p.statement, p.tests, reference):
            return Verdict.reject("too_long", problem)
        try:
            ast.parse(p.tests)
            python_tests = True
        except SyntaxError:
            python_tests = False
        if python_tests and (banned := banned_apis(p.tests, frozenset(cfg.allowed_modules))):
            return Verdict.reject("banned_api", ", ".join(banned))
        if python_tests:
            f = features(p.statement, p.tests)
        else:  # not Python: the text itself stands in for the normalised AST
            toks = words(p.tests)
            f = {"ast_hash": hashlib.sha256(" ".join(toks).encode()).hexdigest()[:16],
                 "shingles": sorted(shingles(words(p.statement), 2, "s:") | shingles(toks, 3, "c:")),
                 "statement_words": len(words(p.statement)), "code_tokens": len(toks)}
            f["length"] = f["statement_words"] + f["code_tokens"]
        task = PracticeTask(id=task_id(self.name, f["ast_hash"], p.statement), domain=self.name, kind=p.kind,
                            statement=p.statement, created_round=round,
                            payload={"files": p.files, "tests": p.tests, "verifier": str(self.verifier)}, **f)
        if dup := static_duplicate(task, archive, cfg):
            return dup
        first = None
        for conditions in CONDITIONS:  # those `verify` runs a solution under
            got = run_verifier(self.verifier, p.files, p.tests, limit=cfg.time_limit, conditions=conditions,
                               sandbox=self.sandbox)
            if got[0] is None:
                return Verdict.reject("timeout", f"the verifier did not finish within {cfg.time_limit:.0f}s "
                                                 f"({conditions.describe()})")
            if first is None:
                first = got
                if not got[0]:
                    return Verdict.reject("reference_fails", f"the verifier rejects the reference: {got[1][-200:]}")
            elif got != first:
                return Verdict.reject("nondeterministic", f"the verifier's verdict or output differs between "
                                                          f"{CONDITIONS[0].describe()} and {conditions.describe()}")
        for label, files in (("an empty solution", {}), ("empty files", dict.fromkeys(p.files, ""))):
            passed, _ = run_verifier(self.verifier, files, p.tests, limit=cfg.trivial_limit * 5, sandbox=self.sandbox)
            if passed:
                return Verdict.reject("trivial", f"the verifier accepts {label}")
        return Verdict(True, task=task)

    def solver_goal(self, task: PracticeTask) -> str:
        return (f"{task.statement}\n\nWrite the solution as files in this repository (domain `{self.name}`, skill "
                f"{self.skill}); a hidden verifier decides.")

    def verify(self, task: PracticeTask, workdir: Path) -> tuple[bool, str]:
        for conditions in CONDITIONS:  # those the gates ran the reference under
            passed, _ = run_verifier(Path(task.payload["verifier"]), None, task.payload["tests"],
                                     limit=self.gates.time_limit, conditions=conditions, workdir=Path(workdir),
                                     sandbox=self.sandbox)
            if not passed:
                where = "" if conditions == CONDITIONS[0] else f" under {conditions.describe()}"
                return False, f"the verifier rejects the solution{where}"
        return True, "the verifier accepts the solution"


def skill_domains(root: Path | None) -> dict[str, SkillDomain]:
    """Every domain the installed (and, in a trusted repository, the project's) skills add."""
    from loopwright.skills.catalog import discover

    out: dict[str, SkillDomain] = {}
    for entry in discover(root).entries:
        meta = entry.skill.metadata
        name, verifier = meta.get(DOMAIN_KEY), meta.get(VERIFIER_KEY)
        if not name or not verifier or not _safe(verifier):
            continue
        path = entry.skill.path / verifier
        if path.is_file() and name not in out:
            out[name] = SkillDomain(name, path, entry.ref)
    return out


def skill_domain(root: Path | None, name: str) -> SkillDomain | None:
    return skill_domains(root).get(name)

"""The real proposer and solver: a model writes the tasks, loopwright runs (through the Runner) attempt them.

`ModelProposer`: one model call per request (the domain's prompt), the reply
is the proposals' text; its cost is added to the run's spending.

`RunnerSolver`: each of the k attempts is a loopwright task run by `Runner` in
its own worktree, in parallel (at most `config.max_parallel` at once), every
one under the same token budget (`budget.max_tokens` = `budget_tokens`). The
acceptance check is the domain's verifier run from a temporary folder outside
the worktree (the hidden tests live there, never in the repository); an
attempt gets `[selfplay] check_tries` calls to finish, and `outcome` turns
its run into passed, failed, truncated or error (domain.Attempt). Nothing merges: practice tasks run with
`on_success = keep`, and each attempt's worktree and branch are removed once
it is measured. The Runner reflects after every run (lessons, skill drafts),
which is how practice feeds memory; the lessons shown to a task's attempts
are credited once all k are measured, relative to the task's measured
success (`Lessons.credit_practice`: at the 50% target a failure is expected,
not a lesson's fault); held-out attempts (`learn=False`) run with reflection
off.

While a task is attempted its reference and hidden tests wait in the store
(`.loopwright/selfplay/hidden/<task id>.json`), which no worktree and no jail
holds; the check the solver is shown is opaque (`python -P -m loopwright
selfplay verify <task id>`): loopwright's own verifier, run outside the jail,
which puts the hidden tests and the project's suite into a jail of the run's
policy. The file is deleted when the k attempts end. (With `[sandbox] mode =
"none"` a determined agent could still read the store.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from loopwright.harness.messages import Message, TextBlock
from loopwright.harness.models import ModelAdapter, cost_usd
from loopwright.harness.retry import call_model
from loopwright.harness.statuses import RunStatus, TaskStatus
from loopwright.memory.lessons import Lessons
from loopwright.memory.store import Run
from loopwright.runtime.agents import LOOPWRIGHT
from loopwright.runtime.config import Config
from loopwright.runtime.learning.selfplay.domain import Attempt, Domain, PracticeTask, ProposalRequest, SelfPlayError
from loopwright.runtime.merging import GIT_LOCK
from loopwright.runtime.project import DIR, Project
from loopwright.runtime.runner import Runner, make_adapter, model_options
from loopwright.workspaces.git import Workspace

PROPOSER_SYSTEM = ("You write practice tasks for another coding agent. Each task must be verifiable (hidden tests "
                   "decide), worth solving, and about as hard as asked. Reply with JSON only.")
DEFAULT_BUDGET_TOKENS = 200_000


class ModelProposer:
    """A model as the proposer (one call per request); `take_cost()` hands the spending to the engine."""

    def __init__(self, config: Config, adapter: Callable[[], ModelAdapter] | None = None):
        self.config = config
        self.adapter = adapter or (lambda: make_adapter(config))
        self.cost = 0.0
        self.calls = 0

    async def propose(self, request: ProposalRequest, prompt: str) -> list[str]:
        adapter = self.adapter()
        try:
            response = await call_model(adapter, self.config.retry.policy(), system=PROPOSER_SYSTEM,
                                        messages=[Message.user(prompt)], tools=[],
                                        max_tokens=self.config.max_output_tokens)
        finally:
            await adapter.aclose()
        self.calls += 1
        self.cost += cost_usd(response.usage, self.config.model_info())
        text = "\n".join(b.text for b in response.message.content if isinstance(b, TextBlock))
        return [text] if text.strip() else []

    def take_cost(self) -> float:
        cost, self.cost = self.cost, 0.0
        return cost


class RunnerSolver:
    """k attempts as loopwright runs (see the module docstring)."""

    def __init__(self, project: Project, *, budget_tokens: int = DEFAULT_BUDGET_TOKENS, parallel: int | None = None,
                 keep_worktrees: bool = False):
        self.project, self.budget_tokens, self.keep_worktrees = project, budget_tokens, keep_worktrees
        self.parallel = parallel or project.config.max_parallel
        self._sem: asyncio.Semaphore | None = None

    def _config(self, learn: bool) -> Config:
        config = self.project.config
        update: dict = {"budget": config.budget.model_copy(update={"max_tokens": self.budget_tokens}),
                        "on_success": "keep"}
        if not learn:
            update["memory"] = config.memory.model_copy(update={"reflect": False})
        return config.model_copy(update=update)

    async def attempts(self, domain: Domain, task: PracticeTask, k: int, *, learn: bool = True) -> list[Attempt]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.parallel)
        hidden = hide(self.project.root, domain, task)
        try:
            check = domain.check_command(task)
            attempts = list(await asyncio.gather(*(self._one(domain, task, check, i, learn) for i in range(k))))
            if learn:
                lessons = Lessons(self.project.store, self.project.config.memory)
                try:
                    measured = [a for a in attempts if a.run_id and not a.truncated and not a.error]
                    lessons.credit_practice([(a.run_id, a.passed) for a in measured], task.id)
                finally:
                    lessons.close()
            return attempts
        finally:
            hidden.unlink(missing_ok=True)

    async def _one(self, domain: Domain, task: PracticeTask, check: str, index: int, learn: bool) -> Attempt:
        assert self._sem is not None
        async with self._sem:
            config = self._config(learn)
            project = dataclasses.replace(self.project, config=config)
            options = model_options(config) | {"on_success": "keep", "selfplay": {
                "domain": domain.name, "task": task.id, "attempt": index + 1, "heldout": not learn,
                "check_tries": config.selfplay.check_tries}}
            store = project.store
            t = store.create_task(domain.solver_goal(task), title=f"practice: {domain.name} {task.id} #{index + 1}",
                                  check=check, options=options, status=TaskStatus.RUNNING)
            try:
                result = await Runner(project).run_task(t)
            except Exception as e:  # noqa: BLE001 — a run that cannot start says nothing of the solver
                return Attempt(passed=False, error=True, detail=f"{type(e).__name__}: {e}")
            run = result.run
            attempt = outcome(run, checked=bool(store.events(run.id, types=("check_ran",))))
            if not self.keep_worktrees:
                await asyncio.to_thread(self._remove, run)
            return attempt

    def _remove(self, run: Run) -> None:
        try:
            ws = Workspace.open(self.project.root, run.id, Path(run.worktree), run.branch, run.base_commit)
            with GIT_LOCK:
                ws.remove(delete_branch=True)
        except Exception:  # noqa: BLE001 — `loopwright gc` removes what is left
            pass


def hidden_path(root: Path, task_id: str) -> Path:
    """Where a task's reference and hidden tests wait while it is attempted: in the store, which no worktree and no
    jail holds."""
    return root / DIR / "selfplay" / "hidden" / f"{task_id}.json"


def hide(root: Path, domain: Domain, task: PracticeTask) -> Path:
    """Put what `verify` needs of `task` (it, and its domain's gate settings) at its hidden path."""
    path = hidden_path(root, task.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    gates = getattr(domain, "gates", None)
    path.write_text(json.dumps({"task": task.model_dump(), "gates": gates.model_dump() if gates else None}))
    return path


def verify(task_id: str, cwd: Path) -> tuple[bool, str]:
    """`loopwright selfplay verify TASK`, the solver's check: the hidden tests (and, for the repo domain, the
    project's suite) against the work in `cwd`, a run's worktree, jailed as its run is."""
    from loopwright.runtime.learning.selfplay.gates import GateConfig
    from loopwright.runtime.learning.selfplay.python_functions import NAME, PythonFunctions
    from loopwright.runtime.learning.selfplay.repo import NAME as REPO
    from loopwright.runtime.learning.selfplay.repo import RepoDomain
    from loopwright.runtime.learning.selfplay.skills_domain import SkillDomain
    from loopwright.runtime.project import project_root
    from loopwright.runtime.sandboxing import verifier_sandbox

    path = hidden_path(project_root(cwd), task_id)
    if not path.is_file():
        raise SelfPlayError(f"no self-play task {task_id} is being attempted in this project (its attempts ended, "
                            f"or the id is wrong)")
    record = json.loads(path.read_text())
    task = PracticeTask.model_validate(record["task"])
    gates = GateConfig.model_validate(record["gates"]) if record.get("gates") else None
    if task.domain == NAME:
        domain: Domain = PythonFunctions(gates)
    elif task.domain == REPO:
        domain = RepoDomain(cwd, check=task.payload.get("check"), gates=gates)
    else:
        domain = SkillDomain(task.domain, Path(task.payload["verifier"]), "", gates)
    domain.sandbox = verifier_sandbox()  # the run's policy: the hidden tests and the suite run jailed
    return domain.verify(task, cwd)


def outcome(run: Run, *, checked: bool) -> Attempt:
    """The attempt a finished run was: passed when its check passed; truncated only when its budget ended before
    the first call to finish (`checked`: the check ran at least once), else failed; a pause, a kill or a run that
    failed without a check (the model refused for good, a script that disagrees) is an error."""
    status = run.status
    attempt = Attempt(passed=status == RunStatus.SUCCEEDED, tokens=run.tokens, cost_usd=run.cost_usd, run_id=run.id,
                      detail=run.reason or "")
    if status == RunStatus.BUDGET_EXCEEDED:
        attempt.truncated = not checked
    elif status in (RunStatus.PAUSED, RunStatus.KILLED, RunStatus.RUNNING) or (status == RunStatus.FAILED
                                                                               and not checked):
        attempt.error = True
    return attempt


def build(domain_name: str, *, provider: str | None = None,
          model: str | None = None) -> tuple[Domain, ModelProposer, RunnerSolver, Project]:
    """The domain, a model proposer and a Runner solver for `loopwright selfplay` in the project around cwd."""
    from loopwright.runtime.learning.selfplay.python_functions import NAME, PythonFunctions
    from loopwright.runtime.project import open_project
    from loopwright.runtime.runner import check_model

    overrides = {k: v for k, v in (("provider", provider), ("model", model)) if v}
    project = open_project(Path.cwd(), overrides=overrides)
    check_model(project.config)  # the solver's agent (a CLI agent: its template)
    if project.config.agent != LOOPWRIGHT:  # the proposer is loopwright's own model, whatever agent solves
        check_model(project.config.model_copy(update={"agent": LOOPWRIGHT}))
    if domain_name == NAME:
        domain: Domain = PythonFunctions()
    elif domain_name == "repo":
        from loopwright.runtime.learning.selfplay.repo import RepoDomain

        domain = RepoDomain(project.root, check=project.config.check)
    else:
        from loopwright.runtime.learning.selfplay.skills_domain import skill_domain

        found = skill_domain(project.root, domain_name)
        if found is None:
            raise SelfPlayError(f"unknown domain {domain_name!r}: python-functions, repo, or a skill whose metadata "
                                f"names a selfplay domain")
        domain = found
    from loopwright.runtime.sandboxing import make_sandbox

    domain.sandbox = make_sandbox(project.config)  # references and hidden tests run in the runs' jail
    return domain, ModelProposer(project.config), RunnerSolver(project), project

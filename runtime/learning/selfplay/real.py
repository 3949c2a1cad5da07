"""The real proposer and solver: a model writes the tasks, loopwright runs (through the Runner) attempt them.

`ModelProposer`: one model call per request (the domain's prompt), the reply
is the proposals' text; its cost is added to the run's spending.

`RunnerSolver`: each of the k attempts is a loopwright task run by `Runner` in
its own worktree, in parallel (at most `config.max_parallel` at once), every
one under the same token budget (`budget.max_tokens` = `budget_tokens`). The
acceptance check is the domain's verifier run from a temporary folder outside
the worktree (the hidden tests live there, never in the repository), so a run
ends succeeded (passed), budget_exceeded (truncated: it hit the budget) or
anything else (failed). Nothing merges: practice tasks run with
`on_success = keep`, and each attempt's worktree and branch are removed once
it is measured. The Runner reflects after every run (lessons, skill drafts),
which is how practice feeds memory; the lessons shown to a task's attempts
are credited once all k are measured, relative to the task's measured
success (`Lessons.credit_practice`: at the 50% target a failure is expected,
not a lesson's fault); held-out attempts (`learn=False`) run with reflection
off.

The hidden folder is outside the worktree: the agent's file tools stay inside
it, and its shell runs in the sandbox, whose /tmp is its own (with `[sandbox]
mode = "none"` a determined agent could read the tests). The check is
loopwright's own verifier (`python -P -m ...`, so the worktree's files are not
importable by it); it runs outside the jail and puts the hidden tests and the
project's suite into a jail of the same policy. The folder is deleted when the
k attempts end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from loopwright.harness.messages import Message, TextBlock
from loopwright.harness.models import ModelAdapter, cost_usd
from loopwright.harness.retry import call_model
from loopwright.harness.statuses import RunStatus, TaskStatus
from loopwright.memory.lessons import Lessons
from loopwright.runtime.config import Config
from loopwright.runtime.learning.selfplay.domain import Attempt, Domain, PracticeTask, ProposalRequest, SelfPlayError
from loopwright.runtime.merging import GIT_LOCK
from loopwright.runtime.project import Project
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
        hidden = Path(tempfile.mkdtemp(prefix="lw-selfplay-check-"))
        try:
            check = domain.check_command(task, hidden)
            attempts = list(await asyncio.gather(*(self._one(domain, task, check, i, learn) for i in range(k))))
            if learn:
                lessons = Lessons(self.project.store, self.project.config.memory)
                try:
                    lessons.credit_practice([(a.run_id, a.passed) for a in attempts if a.run_id and not a.truncated],
                                            task.id)
                finally:
                    lessons.close()
            return attempts
        finally:
            shutil.rmtree(hidden, ignore_errors=True)

    async def _one(self, domain: Domain, task: PracticeTask, check: str, index: int, learn: bool) -> Attempt:
        assert self._sem is not None
        async with self._sem:
            config = self._config(learn)
            project = dataclasses.replace(self.project, config=config)
            options = model_options(config) | {"on_success": "keep", "selfplay": {
                "domain": domain.name, "task": task.id, "attempt": index + 1, "heldout": not learn}}
            store = project.store
            t = store.create_task(domain.solver_goal(task), title=f"practice: {domain.name} {task.id} #{index + 1}",
                                  check=check, options=options, status=TaskStatus.RUNNING)
            try:
                result = await Runner(project).run_task(t)
            except Exception as e:  # noqa: BLE001 — a run that cannot start is a failed attempt, not a crash
                return Attempt(passed=False, detail=f"{type(e).__name__}: {e}")
            run = result.run
            attempt = Attempt(passed=run.status == RunStatus.SUCCEEDED,
                              truncated=run.status == RunStatus.BUDGET_EXCEEDED, tokens=run.tokens,
                              cost_usd=run.cost_usd, run_id=run.id, detail=run.reason or "")
            if not self.keep_worktrees:
                await asyncio.to_thread(self._remove, run)
            return attempt

    def _remove(self, run) -> None:
        try:
            ws = Workspace.open(self.project.root, run.id, Path(run.worktree), run.branch, run.base_commit)
            with GIT_LOCK:
                ws.remove(delete_branch=True)
        except Exception:  # noqa: BLE001 — `loopwright gc` removes what is left
            pass


def build(domain_name: str, *, provider: str | None = None,
          model: str | None = None) -> tuple[Domain, ModelProposer, RunnerSolver, Project]:
    """The domain, a model proposer and a Runner solver for `loopwright selfplay` in the project around cwd."""
    from loopwright.runtime.learning.selfplay.python_functions import NAME, PythonFunctions
    from loopwright.runtime.project import open_project
    from loopwright.runtime.runner import check_model

    overrides = {k: v for k, v in (("provider", provider), ("model", model)) if v}
    project = open_project(Path.cwd(), overrides=overrides)
    check_model(project.config)
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

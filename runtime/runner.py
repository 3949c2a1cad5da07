"""Run one task end to end: worktree, agent loop, acceptance check, merge. Shared by `loopwright run` and the daemon.

`start_run` makes the task, the run and its worktree; `resume_run` takes a
paused or orphaned run back (resetting the worktree to its last checkpoint);
both then drive the same `AgentLoop`, whose `on_finish` here runs the task's
acceptance check and squash-merges on success.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loopwright.harness.events import (
    CheckRan,
    LessonsRecalled,
    MergeConflict,
    Merged,
    Reflected,
    RolledBack,
    RunStarted,
    SkillsChanged,
    SkillsLeftOut,
    StopRequested,
)
from loopwright.harness.loop import AgentLoop, FinishVerdict, LoopOutcome, LoopSettings, Stopped, rollback_notice
from loopwright.harness.messages import ModelResponse, ToolResult
from loopwright.harness.models import ModelAdapter, ModelUnavailable
from loopwright.harness.sandbox import Sandbox, SandboxError
from loopwright.harness.script import Script, ScriptTurn
from loopwright.harness.scripted import ScriptedModel
from loopwright.harness.tools import STANDARD_TOOLS, CommandResult, Toolbox, ToolContext, run_command
from loopwright.memory.artifacts import ARTIFACT_TOOLS
from loopwright.memory.run import RunMemory
from loopwright.memory.store import RUN_FINAL, Command, Run, Store, StoreError, Task, new_run_id
from loopwright.memory.tools import MEMORY_TOOLS
from loopwright.runtime.chat.threads import TASK_DONE, FanOut, children
from loopwright.runtime.config import Config
from loopwright.runtime.fleet.budget import FleetBudget
from loopwright.runtime.fleet.quota import StoreQuotaGate, gate_key
from loopwright.runtime.project import Project
from loopwright.runtime.sandboxing import (
    POLICY_VARIABLE,
    Redactor,
    check_worktree,
    chosen_event,
    make_sandbox,
    run_sandbox,
    setup_sandbox,
)
from loopwright.skills.catalog import Catalog, Entry, SkillError, discover
from loopwright.skills.tool import WATCHER, SkillShelf, UseSkill
from loopwright.workspaces.git import Workspace, WorkspaceError, current_branch, require_commits

SYSTEM_PROMPT = """\
You are a coding agent run by loopwright. You work alone and autonomously in a git worktree of the user's \
repository (your current directory for every tool). Inspect before you change things; make focused changes; \
run the tests yourself. Every step that changes files is checkpointed automatically, and a person may roll \
your worktree back: if you are told so, re-read the files. Keep short notes in the scratch pad (tool \
`scratchpad`): it survives when your context is summarised. Register files worth keeping for people (a plan, a \
report, a figure) with `artifact`. When the task is done, call `finish` with a short summary. You do not decide \
whether the work is accepted: the task's acceptance check does, and if it fails you will see its output and \
continue."""

MEMORY_PROMPT = """ Lessons from earlier runs in this project may be listed in your task; `recall` finds more. When \
you learn something a later task should know, `remember` it in one short, specific sentence."""


@dataclass
class RunResult:
    run: Run
    task: Task
    again: bool = False  # loop-until-done: another attempt follows


def task_text(task: Task, check: str | None) -> str:
    parts = [f"# Task {task.id}: {task.title}", "", task.goal]
    if check:
        parts += ["", f"Acceptance check (run in the worktree when you call finish): `{check}`"]
    else:
        parts += ["", "No acceptance check is configured: when you finish, the branch is kept for a person to review."]
    return "\n".join(parts)


def placebo_text(length: int) -> str:
    """Neutral filler of `length` characters standing in for recalled lessons (the placebo arm of an eval)."""
    line = ("## Notes (placebo: neutral text of the same length as recalled lessons would be)\n"
            "- Work carefully and check your changes.\n")
    return (line * (length // len(line) + 1))[:length]


def check_model(config: Config, *, key: bool = True) -> None:
    """Fail now, in one line, on a missing key (unless not `key`: a task posted for a daemon that has it), an
    unknown model or a broken script."""
    if config.provider == "scripted":
        Script.load(config.script)  # type: ignore[arg-type]
    else:
        config.model_info()
        if key:
            config.api_key()


class KeyMissing(ModelAdapter):
    """The model of a run the daemon started without the provider key in its environment: the first model call
    pauses the run, saying which variable to set (a task is posted from where the key need not be)."""

    def __init__(self, config: Config, variable: str):
        self.provider, self.model, self.variable = config.provider, config.model, variable

    async def complete(self, **_) -> ModelResponse:
        raise ModelUnavailable(f"{self.variable} is not set in the daemon's environment: restart `loopwright "
                               f"serve` with it exported, then `loopwright resume` the run")


def make_adapter(config: Config, *, start_at: int = 0, key_missing_pauses: bool = False) -> ModelAdapter:
    """The configured model (see `check_model` for what fails here). With `key_missing_pauses` (the daemon) a
    provider key missing from the environment gives a `KeyMissing` instead of failing."""
    if config.provider == "scripted":
        return ScriptedModel(Script.load(config.script), start_at=start_at, model=config.model)  # type: ignore[arg-type]
    from loopwright.harness.adapters import build_adapter

    config.model_info()
    if key_missing_pauses and (variable := config.missing_key()) is not None:
        return KeyMissing(config, variable)
    return build_adapter(config.provider, config.model, api_key=config.api_key(), base_url=config.base_url,
                         timeout=config.request_timeout)


# The runs of one process share the repository: worktrees are added and target branches moved one at a
# time (git's own lock files would make the losers fail). Another process moving the branch in between
# is retried.
GIT_LOCK = threading.Lock()
MERGE_ATTEMPTS = 3


def _merge(ws: Workspace, target: str, message: str):
    for _ in range(MERGE_ATTEMPTS - 1):
        try:
            return ws.squash_merge(target, message, git_lock=GIT_LOCK)
        except WorkspaceError as e:
            if "moved while merging" not in str(e):
                raise
    return ws.squash_merge(target, message, git_lock=GIT_LOCK)


def _work_is_whole(store: Store, run_id: str) -> bool:
    """Whether no tool has started since the agent was last given tool results: what the worktree holds beyond
    the last checkpoint is then the whole work of finished turns (their checkpoint is written behind the next
    model call), not half of a tool's."""
    whole = True
    for _, _, event in store.events(run_id, types=("message", "tool_started")):
        if event.type == "tool_started":
            whole = False
        elif event.message.role == "user" and any(isinstance(b, ToolResult) for b in event.message.content):
            whole = True
    return whole


def merge_message(task: Task, run: Run) -> str:
    return (f"loopwright: {task.title}\n\nTask {task.id}: {task.goal}\n\n"
            f"Loopwright-Task: {task.id}\nLoopwright-Run: {run.id}")


def merge_reviewed(project: Project, run_id: str) -> str:
    """Merge now a run kept for review (a person's decision, in place of the check): squash into its target."""
    store = project.store
    run = store.run(run_id)
    if run.status != "needs_review":
        raise StoreError(f"run {run.id} is {run.status}; only a run kept for review merges by hand")
    if not Path(run.worktree).is_dir():
        raise StoreError(f"the worktree of run {run.id} is gone ({run.worktree}); merge its branch {run.branch} "
                         f"with git")
    task = store.task(run.task_id)
    ws = Workspace.open(project.root, run.id, Path(run.worktree), run.branch, run.base_commit,
                        copy_files=project.config.workspace.copy_files)
    merge = _merge(ws, run.target_branch, merge_message(task, run))
    if merge.status == "conflict":
        store.append(run.id, MergeConflict(target_branch=run.target_branch, detail=merge.detail))
        raise StoreError(f"run {run.id} does not merge cleanly into {run.target_branch}: {merge.detail}")
    if merge.status == "nothing":
        reason = "merged by hand: no changes to merge"
    else:
        store.append(run.id, Merged(target_branch=run.target_branch, commit=merge.commit or ""))
        reason = f"merged by hand into {run.target_branch} as {(merge.commit or '')[:10]}"
    store.transition_run(run.id, "succeeded", only_from=("needs_review",), reason=reason,
                         merge_commit=merge.commit)
    return reason


def resumable(store: Store, run_id: str) -> Run:
    """The run, if it may be resumed: not finished (a budget stop may go on) and not running in a live process."""
    run = store.run(run_id)
    if run.status in RUN_FINAL and run.status != "budget_exceeded":
        raise StoreError(f"run {run.id} is {run.status}; there is nothing to resume")
    if run.status == "running" and run.owner_alive():
        raise StoreError(f"run {run.id} is running in process {run.owner_pid}; pause it first")
    return run


TASK_KEYS = ("provider", "model", "base_url", "script", "on_success")


def model_options(config: Config) -> dict:
    """The model (never the key) and merge policy a task was posted with: every attempt and resume uses them."""
    script = str(Path(config.script).resolve()) if config.script else None
    return {"provider": config.provider, "model": config.model, "base_url": config.base_url, "script": script,
            "on_success": config.on_success}


async def run_check(check: str, worktree: Path, config: Config, ctx: ToolContext, *,
                    trusted: bool = False) -> CommandResult:
    """The acceptance check (or --until command) in the run's jail (`[sandbox] checks`), its output redacted.

    `trusted`: loopwright's own verifier (a self-play attempt's check, `python -P -m loopwright...`), which runs
    outside and puts what it executes (the hidden tests, the project's suite) into a jail of the same policy."""
    box = ctx.sandbox if config.sandbox.checks and not trusted else None
    env = {POLICY_VARIABLE: ctx.sandbox.policy.model_copy(update={"mode": ctx.sandbox.mode}).model_dump_json()} \
        if trusted and ctx.sandbox is not None else None
    try:
        result = await run_command(check, cwd=worktree, timeout=config.check_timeout, cap=config.tools.output_cap,
                                   interrupt=ctx.interrupt, sandbox=box, repo_root=ctx.repo_root, env=env)
    except SandboxError as e:
        return CommandResult(exit_code=126, output=f"the sandbox could not be set up for the check: {e}\n",
                             timed_out=False, duration_ms=0.0)
    output = box.explain(result.output, result.exit_code) if box is not None else result.output
    return dataclasses.replace(result, output=ctx.redact(output) if ctx.redact is not None else output)


class Runner:
    """Drives one run of one task in this process."""

    def __init__(self, project: Project, *, stop: asyncio.Event | None = None, key_missing_pauses: bool = False,
                 sandbox: Sandbox | None = None):
        self.project = project
        self.store = project.store
        self.stop = stop or asyncio.Event()
        self.key_missing_pauses = key_missing_pauses  # the daemon: see `make_adapter`
        self.stop_request: tuple[str, str, bool] | None = None  # (status, reason, interrupt) of `request_stop`
        self.loop: AgentLoop | None = None
        self._lessons = None
        self._sandbox = sandbox  # made once where runs start (run, serve), else here on first use
        self._run_box: Sandbox | None = None  # the current run's view of it (its own proxy with network allow)

    @property
    def sandbox(self) -> Sandbox:
        """The jail agent commands run in (see runtime/sandboxing.py)."""
        if self._sandbox is None:
            self._sandbox = make_sandbox(self.project.config)
        return self._sandbox

    def lessons(self, config: Config):
        """The project's (and the user's global) lessons, opened on first use."""
        if self._lessons is None:
            from loopwright.memory.lessons import Lessons

            self._lessons = Lessons(self.store, config.memory)
        return self._lessons

    # -- starting and resuming ---------------------------------------------------------------

    async def start(self, goal: str, *, check: str | None = None, title: str | None = None,
                    skills: str | None = None) -> RunResult:
        """Create a task and run it now (the foreground `loopwright run`); `skills` as `--skills` takes it."""
        config = self.project.config
        check_model(config)
        require_commits(self.project.root)
        options = model_options(config) | ({"skills": skills} if skills is not None else {})
        task = self.store.create_task(goal, title=title, check=check if check is not None else config.check,
                                      options=options, status="running")
        return await self.run_task(task)

    def _adapter(self, config: Config, *, start_at: int = 0) -> ModelAdapter:
        return make_adapter(config, start_at=start_at, key_missing_pauses=self.key_missing_pauses)

    def _task_config(self, task: Task) -> Config:
        """The project config with the task's own model choice and USD cap (what is left of it) on top."""
        options = {k: v for k, v in task.options.items() if k in TASK_KEYS and v is not None}
        config = self.project.config.model_copy(update=options)
        if task.options.get("budget_usd") is not None:
            left = task.options["budget_usd"] - sum(r.cost_usd for r in self.store.runs(task_id=task.id))
            config.budget = config.budget.model_copy(update={"max_usd": max(left, 1e-9)})
        return config

    async def run_task(self, task: Task) -> RunResult:
        """Run a task this process has claimed (status running): worktree, loop, check, merge."""
        config = self._task_config(task)
        try:
            adapter = self._adapter(config)
            run_id = new_run_id()

            box = setup_sandbox(self.sandbox)

            def make_workspace() -> tuple[str, Workspace]:
                target = task.target_branch or config.target_branch or current_branch(self.project.root)
                return target, Workspace.create(
                    self.project.root, run_id, target_branch=target, worktrees_dir=self.project.worktrees,
                    copy_files=config.workspace.copy_files, setup_command=config.workspace.setup_command,
                    setup_timeout=config.workspace.setup_timeout, git_lock=GIT_LOCK,
                    jail=lambda command, path: box.wrap(command, worktree=path, repo_root=self.project.root),
                    redact=Redactor(config))

            target, ws = await asyncio.to_thread(make_workspace)
            check_worktree(self.sandbox, ws.path, self.project.root)  # extra paths that expose too much: refused
        except Exception as e:
            self.store.set_task_status(task.id, "failed", reason=str(e))
            raise
        return await self._attempts(task, config, ws, target, adapter, run_id)

    async def _attempts(self, task: Task, config: Config, ws: Workspace, target: str, adapter: ModelAdapter,
                        run_id: str) -> RunResult:
        """One run, or (loop-until-done) a fresh run per attempt in the same worktree until the check passes."""
        while True:
            run = self.store.create_run(task.id, provider=config.provider, model=config.model, worktree=str(ws.path),
                                        branch=ws.branch, base_commit=ws.base_commit, target_branch=target,
                                        run_id=run_id)
            self.store.append(run.id, RunStarted(task_id=task.id, goal=task.goal, provider=config.provider,
                                                 model=config.model, worktree=str(ws.path), branch=ws.branch,
                                                 base_commit=ws.base_commit))
            ws = Workspace.open(self.project.root, run.id, ws.path, ws.branch, ws.base_commit,
                                copy_files=config.workspace.copy_files)
            loop = self._loop(run, task, ws, adapter, config, fresh=True)
            loop.start()
            result = await self._drive(loop, run, task, adapter, config)
            if not result.again:
                return result
            run_id = new_run_id()
            config = self._task_config(task)
            adapter = self._adapter(config, start_at=self._script_position(task))

    def request_stop(self, status: str, reason: str, interrupt: bool = False) -> None:
        """Stop the run at its next safe point (a model call in flight is dropped) as `status` (paused or killed);
        with `interrupt` the command a tool is running is ended now instead of waited for."""
        self.stop_request = (status, reason, interrupt)
        if self.loop is not None:
            self.store.append(self.loop.run_id, StopRequested(status=status, reason=reason, interrupt=interrupt))
            self.loop.request_stop(status, reason, interrupt)
        self.stop.set()

    def obey(self, command: Command) -> None:
        """Carry out a pause or kill command: a kill ends the command a tool is running now, a pause waits for it."""
        kill = command.kind == "kill"
        self.request_stop("killed" if kill else "paused", command.args.get("reason") or f"{command.kind} command", kill)

    async def watch_commands(self, every: float = 0.2) -> None:
        """Obey pause and kill commands for this runner's run as they come, also in the middle of a tool call
        (for a run in the foreground; the daemon claims them for its runs itself)."""
        while True:
            await asyncio.sleep(every)
            if self.loop is not None:
                for command in self.store.claim_commands(("pause", "kill"), [self.loop.run_id]):
                    self.obey(command)
                    self.store.finish_command(command.id, ok=True, result="applied")

    async def resume(self, run_id: str) -> RunResult:
        run = resumable(self.store, run_id)
        if not Path(run.worktree).is_dir():
            raise StoreError(f"the worktree of run {run.id} is gone ({run.worktree}); it cannot be resumed")
        task = self.store.task(run.task_id)
        config = self._task_config(task)
        adapter = self._adapter(config, start_at=self._script_position(task))
        check_worktree(self.sandbox, Path(run.worktree), self.project.root)
        if not self.store.claim_run(run.id, only_from=("paused", "running", "budget_exceeded")):
            raise StoreError(f"run {run.id} was taken by another process")
        ws = Workspace.open(self.project.root, run.id, Path(run.worktree), run.branch, run.base_commit,
                            copy_files=config.workspace.copy_files)
        was = "crashed (its process died)" if run.status == "running" else run.status
        notices = [f"Notice: this run was {was} and has been resumed."]
        if run.status == "running":  # its owner died, maybe in the middle of a checkpoint
            await asyncio.to_thread(ws.clear_stale_lock)
        if await asyncio.to_thread(ws.is_dirty):
            if _work_is_whole(self.store, run.id):  # only a checkpoint written behind a model call was cut short
                message = f"step {run.step} (its checkpoint, cut short, written on resume)"
                cp = await asyncio.to_thread(ws.checkpoint, message, step=run.step)
                if cp is not None:
                    self.store.add_checkpoint(run.id, sha=cp.sha, step=run.step, message=message)
            else:
                cps = self.store.checkpoints(run.id)
                sha, seq = (cps[-1].sha, cps[-1].seq) if cps else (run.base_commit, 0)
                await asyncio.to_thread(ws.reset_to, sha)
                self.store.append(run.id, RolledBack(to_sha=sha, to_seq=seq, requested_by="resume"))
                notices.append("Uncommitted changes from the interrupted step were discarded. "
                               + rollback_notice(sha, seq))
        loop = self._loop(self.store.run(run.id), task, ws, adapter, config)
        await loop.prepare_resume(notices)
        result = await self._drive(loop, run, task, adapter, config)
        if result.again:
            return await self._attempts(task, config, ws, run.target_branch,
                                        self._adapter(config, start_at=self._script_position(task)), new_run_id())
        return result

    # -- the loop and what decides it is done -----------------------------------------------------

    def _skills(self, task: Task, config: Config) -> SkillShelf | None:
        """The skills this task's agent sees: the config's or the task's choice (all, auto, none or names)."""
        choice = (task.options.get("skills") or config.skills.select).strip()
        if choice == "none":
            return None
        root, store = self.project.root, self.store
        WATCHER.watch(root)

        def select(catalog: Catalog) -> list[Entry]:
            if choice == "all":
                return catalog.entries
            if choice == "auto":
                hits = catalog.search(f"{task.title} {task.goal}", limit=config.skills.auto_count)
                return [e for score, e in hits if score > 0]
            chosen = []
            for ref in (r.strip() for r in choice.split(",") if r.strip()):
                try:
                    chosen.append(catalog.get(ref))
                except SkillError:
                    continue  # said at post time; a skill removed since is left out
            return chosen
        shelf = SkillShelf(lambda: discover(root, disabled=store.disabled_skills()), config.skills.catalog_tokens,
                           select)
        return shelf if shelf.entries else None

    def _skill_news(self, shelf: SkillShelf):
        def news(run_id: str) -> list[str]:
            changed = shelf.changes()
            if changed is None:
                return []
            self.store.append(run_id, SkillsChanged(added=changed[0], removed=changed[1], updated=changed[2]))
            return [shelf.news(*changed)]
        return news

    def _loop(self, run: Run, task: Task, ws: Workspace, adapter: ModelAdapter, config: Config, *,
              fresh: bool = False) -> AgentLoop:
        shelf = self._skills(task, config)
        lessons = self.lessons(config) if config.memory.recall else None
        box = self._jail(run, ws)
        system_prompt = SYSTEM_PROMPT + (MEMORY_PROMPT if lessons is not None else "")
        if rules := box.rules(ws.path):
            system_prompt += "\n\n" + rules
        tools, skill_context = [cls() for cls in STANDARD_TOOLS], {}
        if shelf is not None:
            text, left_out = shelf.prompt()
            if left_out:
                self.store.append(run.id, SkillsLeftOut(names=left_out, budget_tokens=config.skills.catalog_tokens))
            system_prompt += text
            tools.append(UseSkill())
            skill_context = {"skills": shelf, "read_roots": shelf.roots}
        tools += [cls() for cls in ARTIFACT_TOOLS] + ([cls() for cls in MEMORY_TOOLS] if lessons is not None else [])
        chat = task.options.get("chat")
        if chat and not chat.get("parent"):
            tools.append(FanOut())
        memory = RunMemory(store=self.store, run_id=run.id, task_id=task.id,
                           artifacts_root=self.project.dir / "artifacts", lessons=lessons)
        recalled = self._recalled(run, task, config, fresh) if lessons is not None else ""
        settings = LoopSettings(
            system_prompt=system_prompt,
            task_text=task_text(task, task.check_cmd) + recalled + self._progress(task, run),
            max_output_tokens=config.max_output_tokens, model_info=config.model_info(), budget=config.budget,
            retry=config.retry.policy(), compact_at=config.context.compact_at, keep_recent=config.context.keep_recent,
            fleet=FleetBudget(self.store, config.fleet),
            quota_gate=None if config.provider == "scripted" else StoreQuotaGate(
                self.store, gate_key(config.provider, config.model, config.base_url), config.quota,
                config.retry.policy()),
            tool_context={"shell_timeout": config.tools.shell_timeout,
                          "max_shell_timeout": config.tools.max_shell_timeout, "output_cap": config.tools.output_cap,
                          "env": {"LOOPWRIGHT_RUN_ID": run.id, "LOOPWRIGHT_TASK_ID": str(task.id)}, "memory": memory,
                          "sandbox": box, "repo_root": self.project.root, "redact": Redactor(config), **skill_context},
            turn_notices=self._skill_news(shelf) if shelf is not None else None)

        async def on_finish(summary: str) -> FinishVerdict:
            return await self._accept(run, task, ws, config)

        self.loop = AgentLoop(store=self.store, run_id=run.id, adapter=adapter, toolbox=Toolbox(tools), workspace=ws,
                              settings=settings, on_finish=on_finish, stop=self.stop)
        if self.stop_request is not None:  # asked for before this loop was made
            self.loop.request_stop(*self.stop_request)
        return self.loop

    def _jail(self, run: Run, ws: Workspace) -> Sandbox:
        """The run's view of the sandbox (said in a `sandbox` event: loudly when there is none)."""
        self._close_run_box()
        base = self.sandbox
        self.store.append(run.id, chosen_event(base))
        self._run_box = run_sandbox(base, lambda event: self.store.append(run.id, event))
        return self._run_box

    def _close_run_box(self) -> None:
        if self._run_box is not None and self._run_box is not self._sandbox:
            self._run_box.close()
        self._run_box = None

    def _recalled(self, run: Run, task: Task, config: Config, fresh: bool) -> str:
        """The recalled-lessons section of the task: recalled now for a new run, the same lessons on a resume.

        The placebo arm of `loopwright eval` gets neutral text of the same length, and nothing is recorded as shown.
        """
        lessons = self.lessons(config)
        if fresh:
            found = lessons.recall(f"{task.title}\n{task.goal}", token_budget=config.memory.recall_tokens,
                                   limit=config.memory.recall_count)
        else:
            found = lessons.lessons_shown(run.id)
        section = lessons.recall_section(found)
        if not section:
            return ""
        if config.memory.placebo:
            section = placebo_text(len(section))
        if fresh:
            if not config.memory.placebo:
                lessons.record_shown(run.id, found)
            self.store.append(run.id, LessonsRecalled(refs=[] if config.memory.placebo else [le.ref for le in found],
                                                      tokens=len(section) // 4, placebo=config.memory.placebo))
        return "\n\n" + section

    async def _learn(self, run: Run, task: Task, config: Config) -> None:
        """Reflection after a finished run (see runtime/reflection.py); never fails the run."""
        from loopwright.runtime.learning.reflection import reflect

        if not config.memory.reflect or run.status == "killed":
            return
        adapter, why_not = None, ""
        try:
            if self.stop.is_set():
                why_not = "stopping"
            elif why := FleetBudget(self.store, config.fleet).exhausted():
                why_not = why
            elif config.provider == "scripted":
                script = Script.load(config.script)  # type: ignore[arg-type]
                position = sum(1 for r in self.store.runs(task_id=task.id)
                               for _, _, e in self.store.events(r.id, types=("model_called",))
                               if e.purpose == "reflection")
                reply = script.reflection_reply(position)
                if reply is None:
                    why_not = "the scripted model's script has no reflection reply left"
                else:
                    adapter = ScriptedModel(Script(turns=[ScriptTurn(text=reply)]), model=config.model)
            else:
                adapter = make_adapter(config)
            await reflect(store=self.store, lessons=self.lessons(config), run=run, task=task, config=config,
                          adapter=adapter, project_root=self.project.root, policy=config.retry.policy(),
                          budget_day=FleetBudget(self.store, config.fleet).day(), why_not=why_not)
        except Exception as e:  # noqa: BLE001 — learning is after the fact: it must never take the run down with it
            self.store.append(run.id, Reflected(status="failed", reason=f"{type(e).__name__}: {e}"))
        finally:
            if adapter is not None:
                await adapter.aclose()

    def _progress(self, task: Task, current: Run) -> str:
        """For a later attempt: the task's progress file, which every earlier attempt added to at its end."""
        content = self.store.progress(task.id)
        if not content:
            return ""
        attempt = len(self.store.runs(task_id=task.id))
        cap = task.options.get("max_attempts") or self.project.config.until_max_attempts
        limit = f" of at most {cap}" if task.options.get("until") else ""
        return (f"\n\n## Progress file of this task (this is attempt {attempt}{limit})\n"
                "The worktree holds the work of the earlier attempts. Only the check decides when the task is done.\n\n"
                + content)

    def _record_progress(self, run: Run, task: Task) -> None:
        """Add this attempt's entry to the task's progress file: outcome, the check's output, the agent's notes."""
        attempt = [r.id for r in self.store.runs(task_id=task.id)].index(run.id) + 1
        lines = [f"### Attempt {attempt} (run {run.id}): {run.status}" + (f" — {run.reason}" if run.reason else ""),
                 f"{run.step} steps; last action: {run.last_action or '(none)'}"]
        checks = self.store.events(run.id, types=("check_ran",))
        if checks:
            check = checks[-1][2]
            lines.append(f"Last check `{check.command}`: {'passed' if check.passed else 'failed'} "
                         f"(exit {check.exit_code}). Output tail:\n{check.output_tail[-1500:]}")
        else:
            lines.append("No check ran.")
        pad = self.store.scratchpad(run.id).read()
        if pad:
            lines.append(f"Its scratch pad:\n{pad[-3000:]}")
        self.store.add_progress(task.id, "\n".join(lines))

    async def _accept(self, run: Run, task: Task, ws: Workspace, config: Config) -> FinishVerdict:
        """The acceptance check, then the merge: the agent's claim alone never ends a run."""
        merged = self.store.events(run.id, types=("merged",))
        if merged:  # exactly once: a crash after the merge must not merge (or check) again
            done = merged[-1][2]
            return FinishVerdict("succeeded", f"Accepted and merged into {done.target_branch}.",
                                 reason=f"merged into {done.target_branch} as {done.commit[:10]}")
        parts = children(self.store, task.id)
        if parts:  # a chat request split into parts: it is done when they are (the daemon follows them)
            return FinishVerdict("succeeded", f"Started {len(parts)} parts; their results are posted as replies.",
                                 reason=f"split into {len(parts)} parts")
        check = task.check_cmd
        if not check:
            return FinishVerdict("needs_review", "Finished. No acceptance check is configured; kept for review.",
                                 reason=f"no acceptance check; branch {ws.branch} kept for review")
        loop = self.loop
        assert loop is not None
        result = await run_check(check, ws.path, config, loop.tool_context, trusted=bool(task.options.get("selfplay")))
        if result.interrupted:  # the run is being stopped; a resumed run does the acceptance step again
            raise Stopped(loop.stop_status, loop.stop_reason)
        passed = result.exit_code == 0 and not result.timed_out
        self.store.append(run.id, CheckRan(command=check, passed=passed, exit_code=result.exit_code,
                                           output_tail=result.output[-4000:], duration_ms=result.duration_ms))
        if not passed:
            why = f"timed out after {config.check_timeout:.0f}s" if result.timed_out else f"exit {result.exit_code}"
            feedback = f"The acceptance check `{check}` failed ({why}). Its output:\n{result.output}\n"
            if task.options.get("until"):  # loop-until-done: this attempt ends; the next starts fresh
                return FinishVerdict("failed", feedback, reason=f"`{check}` failed ({why})", again=True)
            return FinishVerdict(None, feedback + "Fix the cause, then call finish again.")
        on_success = self.store.task(task.id).options.get("on_success") or config.on_success  # a person may change it
        if on_success == "keep":
            return FinishVerdict("succeeded", "Accepted: the check passed. The branch is kept for review.",
                                 reason=f"check passed; branch {ws.branch} kept")
        try:
            merge = await asyncio.to_thread(_merge, ws, run.target_branch, merge_message(task, run))
        except WorkspaceError as e:
            return FinishVerdict("needs_review", "Accepted, but the merge failed; kept for review.",
                                 reason=f"merge failed ({e}); branch {ws.branch} kept")
        if merge.status == "conflict":
            self.store.append(run.id, MergeConflict(target_branch=run.target_branch, detail=merge.detail))
            return FinishVerdict("needs_review", "Accepted, but it does not merge cleanly; kept for review.",
                                 reason=f"merge conflict ({merge.detail}); branch {ws.branch} kept")
        if merge.status == "nothing":
            return FinishVerdict("succeeded", "Accepted: the check passed (no changes to merge).",
                                 reason="check passed; no changes to merge")
        self.store.append(run.id, Merged(target_branch=run.target_branch, commit=merge.commit or ""))
        self.store.update_run(run.id, merge_commit=merge.commit)
        return FinishVerdict("succeeded", f"Accepted and merged into {run.target_branch}.",
                             reason=f"merged into {run.target_branch} as {(merge.commit or '')[:10]}")

    async def _drive(self, loop: AgentLoop, run: Run, task: Task, adapter: ModelAdapter, config: Config) -> RunResult:
        try:
            outcome = await loop.run()
            if isinstance(adapter, ScriptedModel) and adapter.unused and outcome.status in ("succeeded", "needs_review"):
                outcome = LoopOutcome("failed", f"scripted model: the run ended with {adapter.unused} script turn(s) "
                                                f"unused — the script and the run disagree")
        finally:
            await adapter.aclose()
            self._close_run_box()
        again = False
        task_status = "paused" if outcome.status == "paused" else None
        task_reason = ""
        if task.options.get("until") and outcome.again and not self.stop.is_set():
            again, why_not = self._another_attempt(task, config)
            if again:
                task_status = "running"
            else:
                task_status = "budget_exceeded" if "budget" in why_not else "failed"
                task_reason = f"{outcome.reason}; {why_not}"
        if outcome.status == "succeeded" and any(p.status not in TASK_DONE for p in children(self.store, task.id)):
            task_status = "waiting"  # on its parts
        self.store.transition_run(run.id, outcome.status, only_from=("running",), reason=outcome.reason,
                                  task_status=task_status)
        if task_reason:
            self.store.set_task_status(task.id, task_status or outcome.status, reason=task_reason)
        ended = self.store.run(run.id)
        if ended.status in RUN_FINAL:
            self._record_progress(ended, task)
            await self._learn(ended, task, config)
        return RunResult(run=self.store.run(run.id), task=self.store.task(task.id), again=again)

    def _another_attempt(self, task: Task, config: Config) -> tuple[bool, str]:
        """Whether loop-until-done may start another attempt, or which cap stops it."""
        runs = self.store.runs(task_id=task.id)
        cap = task.options.get("max_attempts") or config.until_max_attempts
        if len(runs) >= cap:
            return False, f"stopped after {len(runs)} attempt(s): `{task.check_cmd}` never passed"
        spent = sum(r.cost_usd for r in runs)
        budget = task.options.get("budget_usd")
        if budget is not None and spent >= budget:
            return False, f"task budget spent (${spent:.4f} of ${budget:.2f})"
        elapsed = time.time() - runs[0].started_at if runs else 0.0
        if elapsed >= config.until_max_wall_seconds:
            return False, f"time cap reached ({elapsed:.0f}s of {config.until_max_wall_seconds:.0f}s)"
        return True, ""

    def _script_position(self, task: Task) -> int:
        """A scripted model plays one script per task: each attempt and resume goes on where the last stopped."""
        return sum(r.model_calls for r in self.store.runs(task_id=task.id))


def rollback(project: Project, run_id: str, *, to: str | None = None, steps: int | None = None,
             wait_seconds: float = 30.0) -> tuple[Run, int, str, str]:
    """Roll a run's worktree back to a checkpoint (by number or sha prefix, or `steps` back).

    A live run gets a command it applies at its next model boundary (we wait for
    it); a stopped run is reset here and told at its next turn. Returns
    (run, checkpoint number, sha, how it was done).
    """
    import time

    store = project.store
    run = store.run(run_id)
    if run.status in RUN_FINAL and run.status not in ("budget_exceeded", "needs_review", "failed"):
        raise StoreError(f"run {run.id} is {run.status}; its worktree is no longer in use")
    cps = store.checkpoints(run.id)
    seq, sha = _pick_checkpoint(run, cps, to, steps)
    if run.status == "running" and run.owner_alive():
        cmd = store.enqueue_command(run.id, "rollback", {"sha": sha, "seq": seq, "by": "cli"})
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            row = store.conn.execute("SELECT status, result FROM commands WHERE id = ?", (cmd,)).fetchone()
            if row["status"] == "done":
                return run, seq, sha, "applied by the running agent at its model boundary"
            if row["status"] == "failed":
                raise StoreError(f"rollback failed: {row['result']}")
            time.sleep(0.1)
        return run, seq, sha, "queued: the running agent applies it at its next model boundary"
    ws = Workspace.open(project.root, run.id, Path(run.worktree), run.branch, run.base_commit,
                        copy_files=project.config.workspace.copy_files)
    ws.reset_to(sha)
    store.append(run.id, RolledBack(to_sha=sha, to_seq=seq, requested_by="cli"))
    store.enqueue_command(run.id, "notify", {"text": rollback_notice(sha, seq)})
    return run, seq, sha, "done; the agent is told when the run resumes"


def _pick_checkpoint(run: Run, cps: list, to: str | None, steps: int | None) -> tuple[int, str]:
    points = [(0, run.base_commit)] + [(c.seq, c.sha) for c in cps]
    if steps is not None:
        if len(points) == 1:
            raise StoreError(f"run {run.id} has no checkpoints yet: there is nothing to step back over "
                             f"(--to 0 resets its worktree to the start)")
        if steps < 1 or steps > len(points) - 1:
            raise StoreError(f"--steps must be between 1 and {len(points) - 1} for run {run.id}")
        return points[-1 - steps]
    if to is None:
        raise StoreError("say where to: --to CHECKPOINT (a number from `loopwright checkpoints`, or a sha) or --steps N")
    if to.isdigit() and len(to) < 7:
        for seq, sha in points:
            if seq == int(to):
                return seq, sha
        raise StoreError(f"run {run.id} has no checkpoint {to} (it has 0..{len(points) - 1}; 0 is the start)")
    matches = [(seq, sha) for seq, sha in points if sha.startswith(to.lower())]
    if len(matches) != 1:
        raise StoreError(f"'{to}' matches {len(matches)} checkpoints of run {run.id}; "
                         f"see `loopwright checkpoints {run.id}`")
    return matches[0]

"""Queueing a task: the options of `loopwright post`, checked once for the CLI and the task inbox alike."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shlex
import sqlite3
import subprocess
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loopwright.errors import LoopwrightError
from loopwright.harness.commands import clean_env
from loopwright.memory.database import disk_full_error
from loopwright.memory.store import Task
from loopwright.runtime.config import load_config
from loopwright.runtime.fleet.hygiene import disk_full
from loopwright.runtime.project import Project
from loopwright.runtime.runner import check_model, model_options
from loopwright.workspaces.repository import WorkspaceError, require_commits


class PostError(LoopwrightError, ValueError):
    """The request cannot be queued; said in one line."""


class TaskRequest(BaseModel):
    """What `post` takes. Inbox front matter uses the same names (`max_attempts`, `budget_usd`, ...)."""

    model_config = ConfigDict(extra="forbid")

    goal: str
    title: str | None = None
    check: str | None = None
    priority: int = 0
    after: list[int] = Field(default_factory=list)
    until: str | None = None
    max_attempts: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, gt=0)
    target: str | None = None
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    script: str | None = None
    keep: bool = False
    skills: str | None = None
    agent: str | None = None
    agent_command: str | None = None

    @field_validator("goal")
    @classmethod
    def _goal(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the goal is empty: say what the agent should do")
        return v.strip()

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v):
        return [v] if isinstance(v, int) else v

    def overrides(self) -> dict:
        """Config overrides for the model and merge policy this task asks for."""
        over = {"provider": self.provider, "model": self.model, "base_url": self.base_url, "script": self.script,
                "agent": self.agent, "agent_command": self.agent_command}
        if self.agent_command and not self.agent:
            over["agent"] = "command"
        if self.script and not self.provider:
            over["provider"] = "scripted"
        if self.keep:
            over["on_success"] = "keep"
        return over


def parse_request(data: dict) -> TaskRequest:
    """A TaskRequest from plain data, or PostError naming the first bad field."""
    try:
        return TaskRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "request"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = ", ".join(k for k in TaskRequest.model_fields if k != "goal")
            msg = f"unknown option (known: {known})"
        raise PostError(f"{where}: {msg}") from None


def skill_choice(project: Project, value: str, flag: str = "skills") -> str:
    """`all`, `auto`, `none` or skill names separated by commas, each installed (else PostError with the nearest)."""
    from loopwright.skills.catalog import SkillError, discover

    choice = value.strip()
    if choice in ("all", "auto", "none"):
        return choice
    names = [n.strip() for n in choice.split(",") if n.strip()]
    if not names:
        raise PostError(f"{flag} is empty: give all, auto, none or skill names separated by commas")
    catalog = discover(project.root, disabled=project.store.disabled_skills())
    for name in names:
        try:
            catalog.get(name)
        except SkillError as e:
            raise PostError(f"{flag}: {e}") from None
        if any(e.ref == name or e.name == name for e in catalog.disabled):
            raise PostError(f"{flag}: skill '{name}' is disabled in this project; `loopwright skills enable {name}`")
    return ",".join(names)


def cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def check_command(project: Project, command: str, flag: str) -> None:
    """PostError when the first word of a check command (after `NAME=value` assignments) is nothing bash would
    run: not a builtin or keyword, not on PATH, not an executable path from the repository's root. Words that
    bash expands (`$PYTHON`, globs, `~`) and commands that do not start with a word are left to run time."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # words as bash splits them: `g++` is one, `&&` and `;` are apart
    try:
        words = list(lexer)
    except ValueError:  # an open quote: bash says so when it runs
        return
    first = next((w for w in words if not ASSIGNMENT.match(w)), "")
    if not first or first[0] in "();<>|&" or any(c in first for c in "$`*?[]{}~\\"):
        return
    found = subprocess.run(["/bin/bash", "-c", 'type -t -- "$1"', "bash", first], cwd=project.root,
                           env=clean_env(), capture_output=True, text=True).stdout.strip()
    if found:
        return
    if "/" in first:
        raise PostError(f"{flag} `{command}`: {first} is not an executable file in the repository (a path is taken "
                        f"from its root); if the task creates it, write `bash {first}`")
    names: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        with contextlib.suppress(OSError):
            names.update(os.listdir(folder or "."))
    near = difflib.get_close_matches(first, names, n=1, cutoff=0.75)
    raise PostError(f"{flag} `{command}`: command not found: {first} (not on PATH, not a shell builtin)"
                    + (f"; did you mean `{near[0]}`?" if near else "; check the spelling, or give its path"))


def post_task(project: Project, request: TaskRequest, spell: Callable[[str], str] = str) -> Task:
    """Queue `request` with its dependencies in one transaction; PostError/StoreError/ConfigError say what is wrong.

    `spell` names an option in errors the way the user wrote it (`cli_flag` for the command line).
    """
    if request.max_attempts is not None and not request.until:
        raise PostError(f"{spell('max_attempts')} goes with {spell('until')} CMD (loop until the command passes)")
    if request.until and request.check:
        raise PostError(f"{spell('until')} CMD is the check of a loop-until-done task; "
                        f"give {spell('until')} or {spell('check')}, not both")
    try:
        require_commits(project.root)  # said now, as `run` does, not when the daemon starts it
    except WorkspaceError as e:
        raise PostError(str(e)) from None
    over = request.overrides()
    config = project.config if not any(over.values()) else load_config(project.root, overrides=over)
    check_model(config, key=False)  # the key is the daemon's: one missing there pauses the run, saying so
    check = request.until or request.check or config.check
    if check:
        check_command(project, check, spell("until") if request.until else spell("check") if request.check
                      else "check (in the config)")
    options = model_options(config)
    if request.until:
        options.update(until=True, max_attempts=request.max_attempts or config.until_max_attempts)
    if request.budget_usd is not None:
        options["budget_usd"] = request.budget_usd
    if request.skills is not None:
        options["skills"] = skill_choice(project, request.skills, spell("skills"))
    store = project.store
    full = disk_full(project)
    try:
        if not full:
            with store.transaction():
                task = store.create_task(request.goal, title=request.title, check=check,
                                         priority=request.priority, options=options, target_branch=request.target)
                store.add_dependencies(task.id, request.after)
            return task
    except sqlite3.OperationalError as e:
        if not disk_full_error(e):
            raise
        full = disk_full(project, failed=True)
    raise PostError(f"{full}: the task was not queued; free space (or remove finished worktrees with "
                    "`loopwright gc`), then post it again")

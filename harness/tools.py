"""The agent's tools, each declared with a pydantic model whose JSON schema is what the model sees.

Every file tool is confined to the run's worktree (also through symlinks and
`..`) and keeps out of `.git`. A tool never raises into the loop: bad arguments,
unknown tools and failures come back as error results the model can act on.
Every result is capped (head + tail) before it enters the context. File work
runs in a thread so one agent's big grep does not stall the others.

The shell tool runs its command with `harness.commands.run_command`, in the
run's long-lived jail (harness/sandbox_jail.py, ended by `ToolContext.close`),
and adds the sandbox's one-line explanation to a denied action's output. Every
tool's output goes through the run's `redact` (key values become
`[redacted:NAME]`) before anything sees it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import functools
import os
import re
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopwright.harness.commands import run_command
from loopwright.harness.messages import ToolCall, ToolSpec
from loopwright.harness.processes import ProcessLedger
from loopwright.harness.sandbox import Sandbox, SandboxError
from loopwright.harness.sandbox_jail import RunJail, run_jail

SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache",
             ".tox", ".loopwright"}
MAX_LISTED = 500
MAX_MATCHES = 200
MAX_LINE = 2000            # read_file: longer lines are cut
MAX_GREP_LINE = 300
MAX_GREP_FILE = 10_000_000  # grep skips files larger than this


class Scratchpad(Protocol):
    def read(self) -> str: ...
    def append(self, text: str) -> None: ...
    def replace(self, text: str) -> None: ...


@dataclass
class ToolContext:
    """What the tools of one run work on, and their limits."""

    worktree: Path
    scratchpad: Scratchpad
    env: dict[str, str] = field(default_factory=dict)
    shell_timeout: float = 120.0
    max_shell_timeout: float = 1800.0
    output_cap: int = 30_000
    read_roots: tuple[Path, ...] = ()  # folders outside the worktree that read_file may read (skills)
    allowed_tools: frozenset[str] | None = None  # while a skill with `allowed-tools` is active
    active_skill: str | None = None
    skills: Any = None  # what `use_skill` looks skills up in (skills.tool.SkillShelf)
    memory: Any = None  # memory.run.RunMemory: the run's store, lessons and artifacts folder
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)  # set: end the running command now (a kill)
    sandbox: Sandbox | None = None  # the jail shell commands run in (None: bash as this user, keys removed)
    repo_root: Path | None = None  # the repository the worktree belongs to (what the sandbox hides of it)
    redact: Callable[[str], str] | None = None  # hides key values in every tool output
    processes: ProcessLedger | None = None  # where each command's process group is recorded while it may live
    jail: RunJail | None = field(default=None, init=False)  # the shell's long-lived jail in `sandbox`

    def __post_init__(self) -> None:
        self.jail = run_jail(self.sandbox, self.worktree, self.repo_root, self.processes)

    @property
    def shell_roots(self) -> tuple[Path, ...]:
        """The folders a shell command is shown besides the worktree: the skills' (as they are now: skills come and
        go while a run goes)."""
        return self.skills.roots if self.skills is not None else self.read_roots

    def warm_jail(self) -> None:
        """Start the shell's jail ahead of its first command, in the background (nothing without a jail)."""
        if self.jail is not None:
            self.jail.warm(self.shell_roots)

    async def aclose(self) -> None:
        """End the run's jail, if one was started (the next command would start a new one)."""
        if self.jail is not None:
            await self.jail.aclose()


@dataclass(frozen=True)
class ToolOutcome:
    content: str
    is_error: bool = False
    finish_summary: str | None = None
    checkpoint_message: str | None = None
    may_have_changed_files: bool = False


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


def cap_text(text: str, cap: int) -> str:
    """Keep the head and the tail of a long text within `cap` characters, saying how much was left out."""
    if len(text) <= cap:
        return text
    marker_len = len(f"\n[… {len(text)} characters left out …]\n")
    keep = max(cap - marker_len, 0)
    head, tail = keep - keep // 2, keep // 2
    marker = f"\n[… {len(text) - head - tail} characters left out …]\n"
    return (text[:head] + marker + (text[-tail:] if tail else ""))[:cap]


# -- paths -------------------------------------------------------------------------------------------


def resolve_in(worktree: Path, path: str) -> Path:
    """`path` inside the worktree with symlinks resolved; anything outside it or inside a .git is refused."""
    root = worktree.resolve()
    try:
        target = (root / path).resolve()
    except (RuntimeError, OSError) as e:  # symlink loops
        raise ToolError(f"cannot resolve {path}: {e}") from None
    except ValueError as e:  # a NUL byte in the path
        raise ToolError(f"invalid path {path!r}: {e}") from None
    if target != root and root not in target.parents:
        raise ToolError(f"path escapes the worktree: {path} (tools work only inside {root})")
    if ".git" in target.relative_to(root).parts:
        raise ToolError(f"path is inside .git, which tools do not touch: {path} (use git through the shell)")
    return target


def resolve_readable(ctx: ToolContext, path: str) -> Path:
    """Like `resolve_in`, but an absolute path inside one of the run's read-only roots (a skill's folder) is allowed."""
    if ctx.read_roots and os.path.isabs(path):
        try:
            target = Path(path).resolve()
        except (RuntimeError, OSError, ValueError):
            target = None
        if target is not None:
            for root in ctx.read_roots:
                if target == root or root in target.parents:
                    return target
    return resolve_in(ctx.worktree, path)


def _stays_inside(root: Path, p: Path) -> bool:
    try:
        resolve_in(root, str(p))
        return True
    except ToolError:
        return False


def _is_binary(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _walk(root: Path, start: Path) -> Iterator[tuple[Path, str]]:
    """Files under `start` (symlinked directories not followed), skipping .git and caches: (path, worktree-relative)."""
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            yield p, p.relative_to(root).as_posix()


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex over '/'-separated paths: `**` spans directories, `*` and `?` do not."""
    i, out = 0, []
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (j := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body[0] in "!^" else body).replace("\\", "\\\\") + "]")
            i = j + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


class _Matcher:
    """Glob matching: a pattern with no '/' matches file names at any depth; else the path below `start` or the root."""

    def __init__(self, pattern: str, root: Path, start: Path):
        try:
            self.rx = _glob_regex(pattern.removeprefix("./"))
        except re.error as e:  # e.g. a character range like [z-a]
            raise ToolError(f"invalid glob {pattern!r}: {e}") from None
        self.by_name = "/" not in pattern
        self.prefix = "" if start == root else start.relative_to(root).as_posix() + "/"

    def __call__(self, rel: str) -> bool:
        if self.by_name:
            return bool(self.rx.match(rel.rsplit("/", 1)[-1]))
        return bool(self.rx.match(rel) or (rel.startswith(self.prefix) and self.rx.match(rel[len(self.prefix):])))


# -- the tools ---------------------------------------------------------------------------------------


class ToolArgs(BaseModel):
    """A tool's arguments (every tool's own model derives from it): unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


PATH = "path relative to the worktree"


class ShellArgs(ToolArgs):
    command: str = Field(description="bash command, run in the worktree")
    timeout_seconds: float | None = Field(default=None, gt=0, description="kill it after this many seconds "
                                                                          "(default and maximum set by the run)")


class ReadFileArgs(ToolArgs):
    path: str = Field(description=PATH)
    offset: int = Field(default=1, ge=1, description="first line to show (1-based)")
    limit: int | None = Field(default=None, ge=1, description="how many lines to show (default: as many as fit)")


class WriteFileArgs(ToolArgs):
    path: str = Field(description=PATH)
    content: str = Field(description="the complete new content of the file")


class EditFileArgs(ToolArgs):
    path: str = Field(description=PATH)
    old: str = Field(description="exact text to replace (must occur exactly once unless replace_all)")
    new: str = Field(description="replacement text")
    replace_all: bool = Field(default=False, description="replace every occurrence")


class ListFilesArgs(ToolArgs):
    pattern: str = Field(default="**/*", description="glob, e.g. '*.py' (any depth) or 'src/**/*.ts'")
    path: str = Field(default=".", description="directory to list from, relative to the worktree")


class GrepArgs(ToolArgs):
    pattern: str = Field(description="Python regular expression")
    path: str = Field(default=".", description="file or directory to search, relative to the worktree")
    glob: str | None = Field(default=None, description="only files matching this glob, e.g. '*.py'")
    ignore_case: bool = False


class ScratchpadArgs(ToolArgs):
    action: Literal["read", "append", "replace"]
    text: str | None = Field(default=None, description="needed for append and replace")


class CheckpointArgs(ToolArgs):
    message: str = Field(description="commit message: what this checkpoint holds")


class FinishArgs(ToolArgs):
    summary: str = Field(description="what was done, for the person reviewing it")


@functools.cache
def _input_schema(args: type[ToolArgs]) -> dict:
    """The JSON schema of a tool's arguments without pydantic's titles (noise to a model); built once per class
    (~10 ms of CPU each, for every run of a fleet otherwise). Shared: not to be changed by its users."""
    schema = args.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


class Tool(ABC):
    """A tool: its name, description and argument model; `run` does the work."""

    name: str = ""
    description: str = ""
    args: type[ToolArgs] = ToolArgs

    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        return ToolSpec(name=self.name, description=self.description, input_schema=_input_schema(self.args))

    @abstractmethod
    async def run(self, args: Any, ctx: ToolContext) -> ToolOutcome: ...


class FileTool(Tool):
    """A tool whose blocking file work runs in a thread, off the event loop."""

    async def run(self, args: Any, ctx: ToolContext) -> ToolOutcome:
        return await asyncio.to_thread(self.work, args, ctx)

    @abstractmethod
    def work(self, args: Any, ctx: ToolContext) -> ToolOutcome: ...


class Shell(Tool):
    name, args = "shell", ShellArgs
    description = ("Run a bash command in the worktree; returns stdout+stderr merged (long output keeps its head "
                   "and tail) and the exit code. The process group is killed at the timeout. Background processes "
                   "must redirect their output (`cmd > log 2>&1 &`), or they are stopped when the command ends.")

    async def run(self, a: ShellArgs, ctx: ToolContext) -> ToolOutcome:
        timeout = min(a.timeout_seconds or ctx.shell_timeout, ctx.max_shell_timeout)
        # leave room for the status line so the Toolbox's cap does not cut the output a second time
        try:
            r = await run_command(a.command, cwd=ctx.worktree, timeout=timeout, cap=max(ctx.output_cap - 200, 100),
                                  env=ctx.env, interrupt=ctx.interrupt, jail=ctx.jail, sandbox=ctx.sandbox,
                                  repo_root=ctx.repo_root, readable=ctx.shell_roots, processes=ctx.processes)
        except SandboxError as e:
            raise ToolError(f"the sandbox could not be set up: {e}") from None
        output = ctx.sandbox.explain(r.output, r.exit_code) if ctx.sandbox is not None else r.output
        body = output if output.endswith("\n") or not output else output + "\n"
        if r.interrupted:
            return ToolOutcome(f"{body}interrupted: the run was stopped while this command ran; its process group "
                               f"was ended", is_error=True, may_have_changed_files=True)
        if r.timed_out:
            return ToolOutcome(f"{body}timed out after {timeout:g}s; process group killed", is_error=True,
                               may_have_changed_files=True)
        return ToolOutcome(f"{body}{_exit_status(r.exit_code)}", may_have_changed_files=True)


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:  # asyncio reports death by signal N as -N
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"exit code {code}: killed by signal {-code}{name}"
    return f"exit code {code}"


def _binary_note(path: str, size: int) -> str:
    return (f"{path} is a binary file ({size:,} bytes); not shown. Inspect it with the shell "
            f"(e.g. `file`, `xxd | head`) if you must.")


class ReadFile(FileTool):
    name, args = "read_file", ReadFileArgs
    description = ("Read a text file with line numbers (like cat -n). Use offset and limit for a range; a long file "
                   "is shown as far as the output limit allows, with the offset to continue from.")

    def work(self, a: ReadFileArgs, ctx: ToolContext) -> ToolOutcome:
        p = resolve_readable(ctx, a.path)
        if p.is_dir():
            raise ToolError(f"{a.path} is a directory; use list_files")
        if not p.exists():
            raise ToolError(f"file not found: {a.path}")
        if not p.is_file():
            raise ToolError(f"{a.path} is not a regular file")
        size = p.stat().st_size
        budget = max(ctx.output_cap - 300, 100)
        stop = None if a.limit is None else a.offset - 1 + a.limit
        shown: list[str] = []
        used = total = last = 0
        full = False
        with p.open("rb") as f:
            if b"\x00" in f.read(8192):
                return ToolOutcome(_binary_note(a.path, size), is_error=True)
            f.seek(0)
            for n, raw in enumerate(f, 1):  # streamed: a 2 GB log is counted, never held
                total = n
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    return ToolOutcome(_binary_note(a.path, size), is_error=True)
                if n < a.offset or (stop is not None and n > stop) or full:
                    continue
                line = line.removesuffix("\n").removesuffix("\r")
                if len(line) > MAX_LINE:
                    line = f"{line[:MAX_LINE]} [… line cut, {len(line):,} characters in all]"
                entry = f"{n:6}\t{line}"
                if shown and used + len(entry) + 1 > budget:
                    full = True
                    continue
                shown.append(entry)
                used += len(entry) + 1
                last = n
        if total == 0:
            return ToolOutcome(f"{a.path} is empty")
        if a.offset > total:
            raise ToolError(f"offset {a.offset} is past the end of {a.path}, which has {total} lines")
        text = "\n".join(shown)
        if full:
            text += f"\n(lines {a.offset}-{last} of {total}; output limit reached, continue with offset={last + 1})"
        elif a.offset > 1 or last < total:
            text += f"\n(lines {a.offset}-{last} of {total})"
        return ToolOutcome(text)


class WriteFile(FileTool):
    name, args = "write_file", WriteFileArgs
    description = "Create or overwrite a file with the given content (UTF-8; parent directories are created)."

    def work(self, a: WriteFileArgs, ctx: ToolContext) -> ToolOutcome:
        p = resolve_in(ctx.worktree, a.path)
        if p.is_dir():
            raise ToolError(f"{a.path} is a directory")
        existed = p.exists()
        p.parent.mkdir(parents=True, exist_ok=True)
        data = a.content.encode("utf-8")
        p.write_bytes(data)
        return ToolOutcome(f"wrote {len(data):,} bytes to {a.path} ({'overwritten' if existed else 'new file'})",
                           may_have_changed_files=True)


class EditFile(FileTool):
    name, args = "edit_file", EditFileArgs
    description = ("Replace an exact piece of text in a file. `old` must occur exactly once (include surrounding "
                   "lines to make it unique) unless replace_all is true. Whitespace and indentation must match.")

    def work(self, a: EditFileArgs, ctx: ToolContext) -> ToolOutcome:
        p = resolve_in(ctx.worktree, a.path)
        if not p.is_file():
            raise ToolError(f"file not found: {a.path}" + (" (it is a directory)" if p.is_dir() else ""))
        if not a.old:
            raise ToolError("`old` is empty; give the exact text to replace, or use write_file for a whole file")
        data = p.read_bytes()
        if _is_binary(data):
            raise ToolError(_binary_note(a.path, len(data)))
        text = data.decode("utf-8")
        old, new = a.old, a.new
        if old not in text and "\r\n" in text and "\n" in old:
            # the model writes \n; a CRLF file should still be editable
            old, new = (s.replace("\r\n", "\n").replace("\n", "\r\n") for s in (old, new))
        starts = _occurrences(text, old)
        if not starts:
            raise ToolError(f"the text to replace was not found in {a.path}{_closest(text, a.old)}")
        if len(starts) > 1 and not a.replace_all:
            lines = [str(text.count("\n", 0, i) + 1) for i in starts[:20]]
            more = f" and {len(starts) - 20} more" if len(starts) > 20 else ""
            raise ToolError(f"the text to replace was found {len(starts)} times in {a.path}, at lines "
                            f"{', '.join(lines)}{more}; give more context or set replace_all")
        p.write_bytes((text.replace(old, new) if a.replace_all else text.replace(old, new, 1)).encode("utf-8"))
        where = f" at line {text.count(chr(10), 0, starts[0]) + 1}" if len(starts) == 1 else ""
        return ToolOutcome(f"replaced {len(starts)} occurrence(s) in {a.path}{where}", may_have_changed_files=True)


def _occurrences(text: str, old: str) -> list[int]:
    """Start offsets of the non-overlapping occurrences, as str.replace sees them."""
    starts, i = [], text.find(old)
    while i != -1:
        starts.append(i)
        i = text.find(old, i + len(old))
    return starts


def _closest(text: str, old: str) -> str:
    first = next((ln.strip() for ln in old.splitlines() if ln.strip()), "")
    lines = [ln.strip() for ln in text.split("\n")[:20_000]]
    match = difflib.get_close_matches(first, lines, n=1, cutoff=0.6) if first else []
    if not match:
        return " (read the file and copy the text exactly)"
    n = lines.index(match[0]) + 1
    return f" (the closest line is {n}: {match[0][:120]!r}; read the file and copy the text exactly)"


class ListFiles(FileTool):
    name, args = "list_files", ListFilesArgs
    description = (f"List files (not directories) under a directory of the worktree matching a glob, sorted; at most "
                   f"{MAX_LISTED}. Skips .git, node_modules, virtualenvs and caches.")

    def work(self, a: ListFilesArgs, ctx: ToolContext) -> ToolOutcome:
        root = ctx.worktree.resolve()
        start = resolve_in(ctx.worktree, a.path)
        if not start.is_dir():
            raise ToolError(f"not a directory: {a.path}")
        match = _Matcher(a.pattern, root, start)
        found = sorted(rel for _, rel in _walk(root, start) if match(rel))
        if not found:
            return ToolOutcome(f"no files match {a.pattern!r} under {a.path}")
        more = f"\n… and {len(found) - MAX_LISTED} more (narrow the pattern or path)" if len(found) > MAX_LISTED else ""
        return ToolOutcome("\n".join(found[:MAX_LISTED]) + more)


class Grep(FileTool):
    name, args = "grep", GrepArgs
    description = (f"Search text files for a Python regular expression; prints path:line: text, at most "
                   f"{MAX_MATCHES} matches. Skips binaries, files over 10 MB, .git, node_modules and caches.")

    def work(self, a: GrepArgs, ctx: ToolContext) -> ToolOutcome:
        try:
            rx = re.compile(a.pattern, re.IGNORECASE if a.ignore_case else 0)
        except re.error as e:
            raise ToolError(f"invalid regular expression {a.pattern!r}: {e}") from None
        root = ctx.worktree.resolve()
        start = resolve_in(ctx.worktree, a.path)
        if not start.exists():
            raise ToolError(f"not found: {a.path}")
        files = [(start, start.relative_to(root).as_posix())] if start.is_file() else _walk(root, start)
        match = _Matcher(a.glob, root, start) if a.glob else None
        hits: list[str] = []
        extra = 0
        for p, rel in files:
            if match and not match(rel):
                continue
            # a symlinked file may point out of the worktree; _walk does not resolve them
            if p.is_symlink() and not _stays_inside(root, p.relative_to(root)):
                continue
            try:
                if not p.is_file() or p.stat().st_size > MAX_GREP_FILE:
                    continue
                data = p.read_bytes()
            except OSError:
                continue
            if _is_binary(data):
                continue
            for n, line in enumerate(data.decode("utf-8").split("\n"), 1):
                if rx.search(line):
                    if len(hits) < MAX_MATCHES:
                        hits.append(f"{rel}:{n}: {line.removesuffix(chr(13))[:MAX_GREP_LINE]}")
                    else:
                        extra += 1
        more = f"\n… and {extra} more matches (narrow the pattern, path or glob)" if extra else ""
        return ToolOutcome("\n".join(hits) + more if hits else f"no matches for {a.pattern!r}")


class ScratchpadTool(Tool):
    name, args = "scratchpad", ScratchpadArgs
    description = ("Your notes for this run: read, append or replace. They survive context compaction and "
                   "restarts; keep plans, findings and next steps here.")

    async def run(self, a: ScratchpadArgs, ctx: ToolContext) -> ToolOutcome:
        if a.action == "read":
            return ToolOutcome(ctx.scratchpad.read() or "(the scratch pad is empty)")
        if a.text is None:
            raise ToolError(f"action '{a.action}' needs `text`")
        getattr(ctx.scratchpad, a.action)(a.text)
        return ToolOutcome(f"scratch pad {'appended to' if a.action == 'append' else 'replaced'}")


class CheckpointTool(Tool):
    name, args = "checkpoint", CheckpointArgs
    description = ("Commit the worktree now with a message. Steps that change files are also checkpointed "
                   "automatically; use this to mark a meaningful point.")

    async def run(self, a: CheckpointArgs, ctx: ToolContext) -> ToolOutcome:
        return ToolOutcome("checkpoint requested", checkpoint_message=a.message)


class Finish(Tool):
    name, args = "finish", FinishArgs
    description = "Say the task is done, with a summary. The acceptance check then decides; if it fails you continue."

    async def run(self, a: FinishArgs, ctx: ToolContext) -> ToolOutcome:
        return ToolOutcome("finish requested", finish_summary=a.summary)


STANDARD_TOOLS: tuple[type[Tool], ...] = (Shell, ReadFile, WriteFile, EditFile, ListFiles, Grep, ScratchpadTool,
                                          CheckpointTool, Finish)


ALWAYS_ALLOWED = frozenset({"use_skill", "finish", "scratchpad", "checkpoint", "artifact", "remember", "recall"})


def _describe_validation(e: ValidationError) -> str:
    problems = []
    for err in e.errors()[:3]:
        where = ".".join(str(x) for x in err["loc"])
        problems.append(f"argument '{where}': {err['msg']}" if where else err["msg"])
    return "; ".join(problems)


class Toolbox:
    """The tools an agent has; `execute` turns every problem into an error result, never an exception."""

    def __init__(self, tools: list[Tool] | None = None):
        chosen = tools if tools is not None else [cls() for cls in STANDARD_TOOLS]
        self.tools = {t.name: t for t in chosen}
        if len(self.tools) != len(chosen):
            raise ValueError("two tools share a name")
        self._specs = [t.spec() for t in self.tools.values()]

    def specs(self) -> list[ToolSpec]:
        """Name, description and JSON schema of every tool, for the model."""
        return self._specs

    async def execute(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        """Run one tool call; problems come back as `is_error` outcomes, and the content is capped."""
        outcome = await self._execute(call, ctx)
        if ctx.redact is not None:
            outcome = dataclasses.replace(outcome, content=ctx.redact(outcome.content))
        if len(outcome.content) > ctx.output_cap:
            outcome = ToolOutcome(cap_text(outcome.content, ctx.output_cap), outcome.is_error, outcome.finish_summary,
                                  outcome.checkpoint_message, outcome.may_have_changed_files)
        return outcome

    async def _execute(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        tool = self.tools.get(call.name)
        if tool is None:
            return ToolOutcome(f"unknown tool '{call.name}'; the tools are: {', '.join(self.tools)}", is_error=True)
        if ctx.allowed_tools is not None and call.name not in ctx.allowed_tools | ALWAYS_ALLOWED:
            return ToolOutcome(f"{call.name} is not allowed while skill '{ctx.active_skill}' is active (its "
                               f"allowed-tools: {', '.join(sorted(ctx.allowed_tools)) or 'none'}); call use_skill "
                               f"with another skill, or name 'none' to leave it", is_error=True)
        if call.parse_error:
            return ToolOutcome(f"{call.name}: arguments were not valid JSON: {call.parse_error}", is_error=True)
        try:
            args = tool.args.model_validate(call.arguments)
        except ValidationError as e:
            return ToolOutcome(f"{call.name}: {_describe_validation(e)}", is_error=True)
        try:
            return await tool.run(args, ctx)
        except ToolError as e:
            return ToolOutcome(f"{call.name}: {e}", is_error=True)
        except Exception as e:  # noqa: BLE001 — a broken tool must not end the run; the model sees what happened
            return ToolOutcome(f"{call.name} failed: {type(e).__name__}: {e}", is_error=True)

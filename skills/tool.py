"""Skills in a run: the catalog in the system prompt, the `use_skill` tool, `allowed-tools`, and hot reload.

Only names and descriptions enter the prompt (progressive disclosure); `use_skill`
returns a skill's instructions, its folder and its files, which the agent reads
with read_file (the folder is a read-only root of the run) and runs with the
shell. A skill's `allowed-tools` (Claude Code names such as `Read Bash(git:*)`
map onto ours) limit the tools while it is active.

`SkillWatcher` watches every skill folder with watchdog; a run's `SkillShelf`
compares what it last saw at each turn and tells the agent what changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from loopwright.harness.tools import Tool, ToolArgs, ToolContext, ToolError, ToolOutcome
from loopwright.skills.catalog import Catalog, Entry, SkillError, catalog_text, scope_roots

# Claude Code's tool names, as packs write them in `allowed-tools`, and ours
TOOL_ALIASES = {"read": "read_file", "write": "write_file", "edit": "edit_file", "multiedit": "edit_file",
                "notebookedit": "edit_file", "bash": "shell", "glob": "list_files", "ls": "list_files",
                "grep": "grep", "todowrite": "scratchpad"}


def allowed_tool_names(values: list[str]) -> frozenset[str]:
    """Our tool names for a skill's `allowed-tools` entries (`Bash(git:*)` -> shell; unknown names kept as given)."""
    names = set()
    for v in values:
        base = v.split("(", 1)[0].strip()
        names.add(TOOL_ALIASES.get(base.lower(), base))
    return frozenset(names)


class SkillShelf:
    """The skills one run may use, what its agent last saw of them, and what changed since."""

    def __init__(self, build: Callable[[], Catalog], budget_tokens: int, select: Callable[[Catalog], list[Entry]]):
        self.build, self.budget_tokens, self.select = build, budget_tokens, select
        self.catalog = build()
        self.entries = select(self.catalog)
        self.version = WATCHER.version

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(e.skill.path.resolve() for e in self.entries)

    def prompt(self) -> tuple[str, list[str]]:
        """The system prompt's skills section and the skills left out for the token budget."""
        return catalog_text(self.entries, self.budget_tokens)

    def get(self, ref: str) -> Entry:
        entry = self.catalog.get(ref)
        if entry not in self.entries:
            raise ToolError(f"skill '{ref}' is installed but not chosen for this task")
        return entry

    def changes(self) -> tuple[list[str], list[str], list[str]] | None:
        """(added, removed, updated) since the agent last looked, when the watcher saw a change; else None."""
        if WATCHER.version == self.version:
            return None
        self.version = WATCHER.version
        before = {e.ref: (e.skill.description, e.skill.mtime_ns) for e in self.entries}
        self.catalog = self.build()
        self.entries = self.select(self.catalog)
        after = {e.ref: (e.skill.description, e.skill.mtime_ns) for e in self.entries}
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        updated = sorted(r for r in set(after) & set(before) if after[r] != before[r])
        return (added, removed, updated) if added or removed or updated else None

    def news(self, added: list[str], removed: list[str], updated: list[str]) -> str:
        """What to tell the agent about a change."""
        by_ref = {e.ref: e for e in self.entries}
        lines = ["Notice: the installed skills changed."]
        lines += [f"- new: {r}: {by_ref[r].skill.description}" for r in added]
        lines += [f"- updated (call use_skill again for the new text): {r}: {by_ref[r].skill.description}"
                  for r in updated]
        lines += [f"- removed: {r}" for r in removed]
        return "\n".join(lines)


class UseSkillArgs(ToolArgs):
    name: str = Field(description="the skill's name from the Skills list (or pack:name); 'none' leaves the active "
                                  "skill")


class UseSkill(Tool):
    name, args = "use_skill", UseSkillArgs
    description = ("Load a skill from the Skills list: returns its instructions, its folder (read its files with "
                   "read_file using the absolute path; run its scripts with the shell) and its files. While a skill "
                   "with allowed-tools is active, only those tools work.")

    async def run(self, a: UseSkillArgs, ctx: ToolContext) -> ToolOutcome:
        shelf: SkillShelf | None = ctx.skills
        if shelf is None:
            raise ToolError("no skills are available in this run")
        if a.name.strip().lower() == "none":
            ctx.allowed_tools, ctx.active_skill = None, None
            return ToolOutcome("No skill is active now; every tool is available.")
        try:
            entry = shelf.get(a.name.strip())
        except SkillError as e:  # an unknown name, with the closest ones
            raise ToolError(str(e)) from None
        skill = entry.skill
        folder = skill.path.resolve()
        files = skill.files()
        allowed = allowed_tool_names(skill.allowed_tools) if skill.allowed_tools else None
        ctx.allowed_tools, ctx.active_skill = allowed, entry.ref
        parts = [f"# Skill {entry.ref}", f"Folder: {folder}", "", skill.body().strip(), "",
                 "Files in the skill's folder (read with read_file using the folder path; run scripts with "
                 "the shell):"]
        parts += [f"- {folder / f}" for f in files] or ["(none besides SKILL.md)"]
        if allowed is not None:
            parts += ["", f"While this skill is active you may use only: {', '.join(sorted(allowed))} "
                          f"(and use_skill, scratchpad, checkpoint, finish)."]
        return ToolOutcome("\n".join(parts))


class SkillWatcher:
    """Watches every skill folder (watchdog); `version` goes up on any change to a SKILL.md or a skill folder."""

    def __init__(self):
        self.version = 0
        self._observer: Any = None
        self._watched: set[Path] = set()
        self._lock = threading.Lock()

    def watch(self, project_root: Path | None) -> None:
        """Start watching the scope folders of this project (idempotent; roots that do not exist yet are skipped)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                path = str(getattr(event, "dest_path", "") or event.src_path)
                if path.lower().endswith("skill.md") or event.is_directory:
                    with watcher._lock:
                        watcher.version += 1

        with self._lock:
            if self._observer is None:
                self._observer = Observer()
                self._observer.daemon = True
                self._observer.start()
            for _, root in scope_roots(project_root):
                root = root.resolve() if root.exists() else root
                if root in self._watched or not root.is_dir():
                    continue
                self._observer.schedule(Handler(), str(root), recursive=True)
                self._watched.add(root)


WATCHER = SkillWatcher()

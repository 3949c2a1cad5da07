"""A loopwright project: a git repository with a `.loopwright/` folder (store, config, worktrees).

`init_project` creates the folder and hides its local state from git (`.git/info/exclude`): everything in it but
`skills.json`, `skills.lock.json` and `skills/` (what a team commits: `SHARED`); `open_project` finds it from any
folder inside the repository, including a run's own worktree, and rewrites the older exclude line that hid the
whole folder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import git

from loopwright.errors import LoopwrightError
from loopwright.memory.lessons import Lessons
from loopwright.memory.store import Store
from loopwright.runtime.config import CONFIG_TEMPLATE, Config, load_config
from loopwright.workspaces.repository import repo_root

DIR = ".loopwright"
SHARED = ("skills.json", "skills.lock.json", "skills/")  # meant to be committed; the rest of DIR is local state
_OLD_EXCLUDES = (f"/{DIR}/", f"{DIR}/")
EXCLUDE_BLOCK = [f"# loopwright's local state; {', '.join(f'{DIR}/{n}' for n in SHARED)} are meant to be committed",
                 f"/{DIR}/*", *(f"!/{DIR}/{n}" for n in SHARED), f"/{DIR}/skills/.*"]


class ProjectError(LoopwrightError):
    """The folder is not (yet) a loopwright project; said in one line with the fix."""


@dataclass
class Project:
    root: Path
    config: Config
    store: Store

    @property
    def dir(self) -> Path:
        return self.root / DIR

    @property
    def worktrees(self) -> Path:
        return self.dir / "worktrees"

    @property
    def db_path(self) -> Path:
        return self.dir / "state.db"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"


def project_root(cwd: Path) -> Path:
    """The repository a project lives in, from any folder inside it or inside one of its runs' worktrees; a
    WorkspaceError outside a git repository."""
    root = repo_root(cwd)
    parts = root.parts
    # inside a run's worktree (.loopwright/worktrees/<run>): the project is the repository around it
    for i in range(len(parts) - 2):
        if parts[i] == DIR and parts[i + 1] == "worktrees":
            return Path(*parts[:i])
    return root


def init_project(cwd: Path) -> tuple[Path, bool]:
    """Create `.loopwright/` in the repository around cwd. Returns (root, created)."""
    root = project_root(cwd)
    d = root / DIR
    created = not d.exists()
    (d / "worktrees").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(exist_ok=True)
    (d / "inbox").mkdir(exist_ok=True)  # drop task files here for the daemon
    cfg = d / "config.toml"
    if not cfg.exists():
        cfg.write_text(CONFIG_TEMPLATE)
    Store(d / "state.db").close()
    hide_local_state(root)
    return root, created


def _exclude_file(root: Path) -> Path:
    if (root / ".git").is_dir():
        return root / ".git" / "info" / "exclude"
    common = Path(git.Repo(root).git.rev_parse("--git-common-dir"))  # a linked worktree or a submodule
    return (common if common.is_absolute() else root / common) / "info" / "exclude"


def hide_local_state(root: Path) -> None:
    """Write `EXCLUDE_BLOCK` into the repository's exclude file, in place of the line older versions wrote (which
    hid the whole folder, so `git add .loopwright/skills.lock.json` was refused)."""
    exclude = _exclude_file(root)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if EXCLUDE_BLOCK[1] in lines and not any(line in _OLD_EXCLUDES for line in lines):
        return
    kept = [line for line in lines if line not in _OLD_EXCLUDES]
    if EXCLUDE_BLOCK[1] not in kept:
        kept += ([""] if kept and kept[-1] else []) + EXCLUDE_BLOCK
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("\n".join(kept) + "\n")


def open_project(cwd: Path, *, create: bool = False, overrides: dict | None = None) -> Project:
    """The project around cwd; `create` initialises it when missing (as `loopwright run` does)."""
    root = project_root(cwd)
    if not (root / DIR / "state.db").exists():
        if not create:
            raise ProjectError(f"{root} has no {DIR}/ yet (run `loopwright init` there first)")
        init_project(root)
    else:
        with contextlib.suppress(OSError):  # a read-only .git must not stop the command
            hide_local_state(root)
    config = load_config(root, overrides=overrides)
    return Project(root=root, config=config, store=Store(root / DIR / "state.db"))


def open_lessons(root: Path | None = None) -> Lessons:
    """The lessons of the project around `root` (default: the current folder), for scripts and the CLI."""
    project = open_project(root or Path.cwd())
    return Lessons(project.store, project.config.memory)

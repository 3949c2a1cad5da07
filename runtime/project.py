"""A loopwright project: a git repository with a `.loopwright/` folder (store, config, worktrees).

`init_project` creates the folder and hides it from git (`.git/info/exclude`);
`open_project` finds it from any folder inside the repository, including a
run's own worktree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from loopwright.errors import LoopwrightError
from loopwright.memory.lessons import Lessons
from loopwright.memory.store import Store
from loopwright.runtime.config import CONFIG_TEMPLATE, Config, load_config
from loopwright.workspaces.repository import repo_root

DIR = ".loopwright"


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
    common = Path(git.Repo(root).git.rev_parse("--git-common-dir"))
    exclude = (common if common.is_absolute() else root / common) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if f"/{DIR}/" not in lines and f"{DIR}/" not in lines:
        with exclude.open("a") as f:
            f.write(("\n" if lines and lines[-1] else "") + f"/{DIR}/\n")
    return root, created


def open_project(cwd: Path, *, create: bool = False, overrides: dict | None = None) -> Project:
    """The project around cwd; `create` initialises it when missing (as `loopwright run` does)."""
    root = project_root(cwd)
    if not (root / DIR / "state.db").exists():
        if not create:
            raise ProjectError(f"{root} has no {DIR}/ yet (run `loopwright init` there first)")
        init_project(root)
    config = load_config(root, overrides=overrides)
    return Project(root=root, config=config, store=Store(root / DIR / "state.db"))


def open_lessons(root: Path | None = None) -> Lessons:
    """The lessons of the project around `root` (default: the current folder), for scripts and the CLI."""
    project = open_project(root or Path.cwd())
    return Lessons(project.store, project.config.memory)

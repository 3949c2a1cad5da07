"""Git workspaces: a worktree and branch per run, checkpoint commits, rollback, squash merge, removal.

Git is driven through GitPython's command wrapper (`repo.git.<command>`): the
pure-Python index would be far slower on large repositories. A checkpoint uses
only the run worktree's own index, so the user's branches, index and
uncommitted changes are never touched by it. The squash merge is computed
with `git merge-tree --write-tree` and moves the target branch only when the
user's checkout can follow without losing anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import git

TRAILER_RUN = "Loopwright-Run"
TRAILER_STEP = "Loopwright-Step"
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "loopwright", "GIT_AUTHOR_EMAIL": "loopwright@localhost",
                     "GIT_COMMITTER_NAME": "loopwright", "GIT_COMMITTER_EMAIL": "loopwright@localhost"}


class WorkspaceError(Exception):
    """A git problem, said in one line with what to do about it."""


def _first_line(err: git.GitCommandError) -> str:
    text = (err.stderr or err.stdout or str(err)).strip()
    for line in text.splitlines():
        line = line.strip().removeprefix("stderr: ").strip("'").strip()
        if line:
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return f"git exited with {err.status}"


def _repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise WorkspaceError(f"not a git repository: {path} (run `git init` first)") from None


def repo_root(path: Path) -> Path:
    """The top of the git work tree that holds `path`."""
    repo = _repo(Path(path))
    if repo.bare or repo.working_tree_dir is None:
        raise WorkspaceError(f"{path} is a bare repository; loopwright needs a working tree")
    return Path(repo.working_tree_dir)


NO_COMMITS = "the repository has no commits yet (make a first commit, e.g. git commit --allow-empty -m init)"


def current_branch(root: Path) -> str:
    repo = _repo(root)
    try:
        repo.head.commit
    except ValueError:
        raise WorkspaceError(NO_COMMITS) from None
    if repo.head.is_detached:
        raise WorkspaceError("HEAD is detached: check out a branch, or set target_branch in the config")
    return repo.active_branch.name


def _status(repo: git.Repo, *args: str) -> tuple[int, str, str]:
    """Run git and return (exit status, stdout, stderr) without raising: for commands whose status is an answer."""
    return repo.git.execute(["git", *args], with_extended_output=True, with_exceptions=False,
                            strip_newline_in_stdout=False)


_identity_cache: dict[str, bool] = {}


def _identity_env(repo: git.Repo) -> dict[str, str]:
    """Environment for commands that commit: the fallback identity only when git has none configured."""
    key = str(repo.common_dir)
    if key not in _identity_cache:
        try:
            repo.git.config("user.email")
            _identity_cache[key] = True
        except git.GitCommandError:
            _identity_cache[key] = False
    env = {k: v for k, v in os.environ.items()}
    if not _identity_cache[key]:
        env.update({k: os.environ.get(k, v) for k, v in FALLBACK_IDENTITY.items()})
    return env


@dataclass(frozen=True)
class Checkpoint:
    sha: str
    step: int
    message: str


@dataclass(frozen=True)
class MergeResult:
    status: Literal["merged", "conflict", "nothing"]
    commit: str | None
    detail: str


class Workspace:
    """One run's worktree on branch `lw/<run>`."""

    def __init__(self, root: Path, run_id: str, path: Path, branch: str, base_commit: str,
                 copy_files: tuple[str, ...] | list[str] = ()):
        self.root, self.run_id, self.path = Path(root), run_id, Path(path)
        self.branch, self.base_commit = branch, base_commit
        self.copy_files = tuple(copy_files)
        self._repo: git.Repo | None = None

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            if not self.path.is_dir():
                raise WorkspaceError(f"the worktree of run {self.run_id} is gone: {self.path}")
            self._repo = git.Repo(self.path)
        return self._repo

    def _git(self, *args: str, **kw) -> str:
        try:
            return self.repo.git.execute(["git", *args], **kw)
        except git.GitCommandError as e:
            raise WorkspaceError(f"git {args[0]} failed: {_first_line(e)}") from None

    @classmethod
    def create(cls, root: Path, run_id: str, *, target_branch: str, worktrees_dir: Path,
               copy_files: tuple[str, ...] | list[str] = (), setup_command: str | None = None,
               setup_timeout: float = 600) -> "Workspace":
        repo = _repo(root)
        try:
            repo.head.commit
        except ValueError:
            raise WorkspaceError(NO_COMMITS) from None
        try:
            base = repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{target_branch}^{{commit}}")
        except git.GitCommandError:
            raise WorkspaceError(f"no branch '{target_branch}' in {root} (set target_branch to an existing branch)") from None
        path = Path(worktrees_dir) / run_id
        branch = f"lw/{run_id}"
        try:
            repo.git.worktree("add", "--quiet", "-b", branch, str(path), base)
        except git.GitCommandError as e:
            raise WorkspaceError(f"could not create the worktree {path}: {_first_line(e)}") from None
        ws = cls(Path(root), run_id, path, branch, base, copy_files)
        for rel in copy_files:
            src = Path(root) / rel
            if src.is_file():
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, path / rel)
        if setup_command:
            try:
                proc = subprocess.run(["/bin/bash", "-c", setup_command], cwd=path, capture_output=True, text=True,
                                      timeout=setup_timeout)
            except subprocess.TimeoutExpired:
                raise WorkspaceError(f"setup command timed out after {setup_timeout:g}s: {setup_command}") from None
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
                raise WorkspaceError(f"setup command failed (exit {proc.returncode}): {setup_command}: {tail[0][:200]}")
        return ws

    @classmethod
    def open(cls, root: Path, run_id: str, path: Path, branch: str, base_commit: str,
             copy_files: tuple[str, ...] | list[str] = ()) -> "Workspace":
        return cls(root, run_id, path, branch, base_commit, copy_files)

    # -- checkpoints -----------------------------------------------------------------------------

    def _pathspec(self) -> list[str]:
        return ["--", ".", *(f":(exclude,literal){p}" for p in self.copy_files)]

    def checkpoint(self, message: str, *, step: int) -> Checkpoint | None:
        """Commit everything that changed (gitignore respected, copied files excluded); None if nothing did."""
        self._git("add", "-A", *self._pathspec())
        status, _, err = _status(self.repo, "diff", "--cached", "--quiet")
        if status == 0:
            return None  # nothing staged
        if status != 1:
            raise WorkspaceError(f"git diff failed: {err.strip()[:200]}")
        body = f"{message.strip() or f'step {step}'}\n\n{TRAILER_RUN}: {self.run_id}\n{TRAILER_STEP}: {step}\n"
        self._git("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", body, env=_identity_env(self.repo))
        return Checkpoint(sha=self.head(), step=step, message=message)

    def checkpoints(self) -> list[Checkpoint]:
        fmt = f"%H%x00%(trailers:key={TRAILER_STEP},valueonly,unfold)%x00%s%x00%(trailers:key={TRAILER_RUN},valueonly)"
        out = self._git("log", "--reverse", f"--format={fmt}%x1e", f"{self.base_commit}..{self.branch}")
        points = []
        for record in out.split("\x1e"):
            parts = record.strip("\n").split("\x00")
            if len(parts) == 4 and parts[3].strip() == self.run_id and parts[1].strip().isdigit():
                points.append(Checkpoint(sha=parts[0], step=int(parts[1].strip()), message=parts[2]))
        return points

    def head(self) -> str:
        return self._git("rev-parse", "HEAD")

    def is_dirty(self) -> bool:
        out = self._git("status", "--porcelain", "--untracked-files=all", *self._pathspec())
        return bool(out.strip())

    def reset_to(self, sha: str) -> None:
        """Reset the worktree and its branch to `sha` (the start or a commit of this run)."""
        full = self._git("rev-parse", "--verify", f"{sha}^{{commit}}")
        if full != self.base_commit:
            try:
                self.repo.git.merge_base("--is-ancestor", self.base_commit, full)
                self.repo.git.merge_base("--is-ancestor", full, self.branch)
            except git.GitCommandError:
                raise WorkspaceError(f"{sha[:10]} is not a checkpoint of run {self.run_id}") from None
        self._git("reset", "--quiet", "--hard", full)
        self._git("clean", "-fdq", *self._pathspec())

    def diff(self, against: str | None = None) -> str:
        self._git("add", "-A", "--intent-to-add", *self._pathspec())
        return self._git("diff", against or self.base_commit)

    def changed_files(self) -> list[str]:
        self._git("add", "-A", "--intent-to-add", *self._pathspec())
        return [f for f in self._git("diff", "--name-only", self.base_commit).splitlines() if f]

    # -- merge and removal ---------------------------------------------------------------------

    def squash_merge(self, target_branch: str, message: str) -> MergeResult:
        """Squash the run's commits onto the current head of `target_branch` (see the module docstring)."""
        repo = _repo(self.root)
        g = repo.git
        try:
            target_head = g.rev_parse("--verify", f"refs/heads/{target_branch}^{{commit}}")
        except git.GitCommandError:
            raise WorkspaceError(f"no branch '{target_branch}' to merge into") from None
        run_head = g.rev_parse(self.branch)
        if g.rev_parse(f"{run_head}^{{tree}}") == g.rev_parse(f"{self.base_commit}^{{tree}}"):
            return MergeResult("nothing", None, "the run changed nothing")
        # the merge base is found by git: base_commit, unless the target branch was rewritten since
        status, out, err = _status(repo, "merge-tree", "--write-tree", "--name-only", target_head, run_head)
        if status == 1:  # conflicts: the tree id, then the conflicted paths, then a blank line and messages
            files = []
            for line in out.splitlines()[1:]:
                if not line.strip():
                    break
                files.append(line.strip())
            files = list(dict.fromkeys(files))
            return MergeResult("conflict", None, "conflict in " + (", ".join(files[:10]) or "some files"))
        if status != 0:
            raise WorkspaceError(f"git merge-tree failed: {err.strip()[:200]}")
        tree = out.splitlines()[0].strip()
        if tree == g.rev_parse(f"{target_head}^{{tree}}"):
            return MergeResult("nothing", None, f"{target_branch} already has these changes")
        commit = g.execute(["git", "commit-tree", tree, "-p", target_head, "-m", message], env=_identity_env(repo))
        checkout = self._checkout_of(repo, target_branch)
        if checkout is not None:
            status, _, err = _status(git.Repo(checkout), "read-tree", "-m", "-u", target_head, commit)
            if status != 0:
                files = [ln.strip() for ln in err.splitlines() if ln.startswith("\t")]
                detail = ", ".join(files[:10]) or err.strip().splitlines()[0][:200]
                return MergeResult("conflict", None, f"your uncommitted changes to {detail} overlap the run's changes")
        try:
            g.update_ref(f"refs/heads/{target_branch}", commit, target_head)
        except git.GitCommandError as e:
            raise WorkspaceError(f"{target_branch} moved while merging ({_first_line(e)}); try again") from None
        return MergeResult("merged", commit, f"{target_branch} is at {commit[:10]}")

    @staticmethod
    def _checkout_of(repo: git.Repo, branch: str) -> Path | None:
        """The worktree that has `branch` checked out, if any."""
        path: str | None = None
        for line in repo.git.worktree("list", "--porcelain").splitlines():
            if line.startswith("worktree "):
                path = line[len("worktree "):]
            elif line == f"branch refs/heads/{branch}" and path:
                return Path(path)
        return None

    def remove(self, *, delete_branch: bool) -> int:
        """Remove the worktree (and the branch if asked); return the bytes freed."""
        freed = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file() and not f.is_symlink()) \
            if self.path.exists() else 0
        g = _repo(self.root).git
        try:
            if self.path.exists():
                g.worktree("remove", "--force", str(self.path))
            g.worktree("prune")
            if delete_branch:
                g.branch("-D", self.branch)
        except git.GitCommandError as e:
            raise WorkspaceError(f"could not remove the worktree of run {self.run_id}: {_first_line(e)}") from None
        return freed

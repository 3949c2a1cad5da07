"""Git against the remote, and a run's worktree on a worker: a clone per node (cached, fetched for each run),
the run branch checked out in a worktree of it, every checkpoint and rollback pushed back to the remote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import git

from loopwright.runtime.backends.ray.wire import RunSpec
from loopwright.workspaces.git import Checkpoint, Jail, Workspace
from loopwright.workspaces.repository import WorkspaceError, clean_env, git_message, run_git

GIT_TIMEOUT = 300.0  # clone, fetch and push


def remote_git(cwd: Path | None, *args: str, what: str, timeout: float = GIT_TIMEOUT) -> str:
    """A git command that talks to a remote (clone, fetch, push, ls-remote): with a timeout, one-line errors."""
    env = clean_env() | {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": os.environ.get(
        "GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=20")}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"{what} timed out after {timeout:.0f}s") from None
    except OSError as e:
        raise WorkspaceError(f"{what} failed: could not run git: {e}") from None
    if proc.returncode != 0:
        raise WorkspaceError(f"{what} failed: {git_message(proc.stderr, proc.stdout, proc.returncode)}")
    return proc.stdout.strip()


def check_remote(url: str, where: str) -> None:
    """Raise a WorkspaceError saying that `url` cannot be reached from `where`."""
    try:
        remote_git(None, "ls-remote", "--heads", url, what=f"reaching the git remote {url}", timeout=60)
    except WorkspaceError as e:
        raise WorkspaceError(f"the git remote {url} is not reachable from {where}: {e} (set [ray] remote to a URL "
                             f"every node can reach: a bare repository on a shared path, or ssh)") from None


def probe_node(url: str) -> str:
    """Run on one node by the startup probe: '' when the remote answers, else the one-line reason."""
    try:
        check_remote(url, f"the Ray node on {socket.gethostname()}")
    except WorkspaceError as e:
        return str(e)
    return ""


@contextlib.contextmanager
def _flock(path: Path):
    """A lock shared by every process on this machine (the runs of all nodes here share the clone cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class PushedCheckpoints:
    """The loop's checkpoint sink on a worker: every checkpoint and rollback of the run's worktree is pushed to the
    remote, so the head and every other node see it."""

    def __init__(self, ws: Workspace, remote: str):
        self.ws, self.remote = ws, remote

    def checkpoint(self, message: str, *, step: int) -> Checkpoint | None:
        cp = self.ws.checkpoint(message, step=step)
        if cp is not None:
            self.push()
        return cp

    def reset_to(self, sha: str) -> None:
        self.ws.reset_to(sha)
        self.push()

    def push(self) -> None:
        """The run branch to the remote (forced: a rollback moves it back)."""
        branch = self.ws.branch
        last: WorkspaceError | None = None
        for attempt in range(3):
            try:
                remote_git(self.ws.path, "push", "--quiet", "--force", "--no-verify", "origin",
                           f"refs/heads/{branch}:refs/heads/{branch}",
                           what=f"pushing {branch} to the git remote {self.remote}")
                return
            except WorkspaceError as e:  # another run's push on this node may hold a ref lock for a moment
                last = e
                time.sleep(0.2 * (attempt + 1))
        assert last is not None
        raise last


def _copy_in(path: Path, files: dict[str, bytes]) -> None:
    """The project's copied files (`workspace.copy_files`) come from the head, with the run."""
    for rel, data in files.items():
        dst = path / rel
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        except OSError as e:
            raise WorkspaceError(f"could not copy {rel} into the worktree: {e.strerror or e}") from None


def _clone_dir(cache_dir: str, remote: str) -> Path:
    return Path(os.path.expanduser(cache_dir)) / hashlib.sha1(remote.encode()).hexdigest()[:12]


def open_workspace(spec: RunSpec, jail: Jail | None = None, redact: Callable[[str], str] | None = None) -> Workspace:
    """The run's worktree on this node: the cache clone fetched, the run branch checked out at `spec.start_sha`;
    the setup command runs in `jail` (the sandbox's wrap) when given, the output a failure quotes through
    `redact`."""
    cache = _clone_dir(spec.cache_dir, spec.remote)
    clone = cache / "repo"
    path = cache / "worktrees" / spec.branch.removeprefix("lw/")
    with _flock(cache / ".lock"):
        if not (clone / ".git").exists():
            tmp = Path(tempfile.mkdtemp(prefix="clone-", dir=cache))
            try:
                remote_git(None, "clone", "--quiet", "--no-checkout", spec.remote, str(tmp / "repo"),
                           what=f"cloning the git remote {spec.remote}")
                os.replace(tmp / "repo", clone)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        g = git.Git(clone)
        _discard_worktree(clone, path)
        remote_git(clone, "fetch", "--quiet", "origin", f"+refs/heads/{spec.branch}:refs/heads/{spec.branch}",
                   what=f"fetching {spec.branch} from the git remote {spec.remote}")
        start = spec.start_sha or run_git(g, "rev-parse", f"refs/heads/{spec.branch}")
        if run_git(g, "cat-file", "-t", start, what=f"looking for commit {start[:10]}") != "commit":
            raise WorkspaceError(f"commit {start[:10]} of run {spec.run_id} is not on the git remote")
        run_git(g, "update-ref", f"refs/heads/{spec.branch}", start, what="moving the run branch")
        run_git(g, "worktree", "add", "--quiet", str(path), spec.branch, what=f"creating the worktree {path}")
    ws = Workspace(clone, spec.run_id, path, spec.branch, spec.base_commit, copy_files=tuple(spec.copy_files))
    _copy_in(path, spec.copy_files)
    if spec.setup_command:
        ws.run_setup(spec.setup_command, spec.setup_timeout, jail=jail, redact=redact)
    return ws


def _discard_worktree(clone: Path, path: Path) -> None:
    g = git.Git(clone)
    with contextlib.suppress(git.GitCommandError):
        g.execute(["git", "worktree", "remove", "--force", str(path)], with_extended_output=True,
                  with_exceptions=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    g.execute(["git", "worktree", "prune"], with_extended_output=True, with_exceptions=False)


def remove_workspace(ws: Workspace) -> None:
    """The run is over on this node (its work is on the remote): free the disk, drop the branch from the clone."""
    with _flock(ws.root.parent / ".lock"):
        _discard_worktree(ws.root, ws.path)
        git.Git(ws.root).execute(["git", "branch", "-D", ws.branch], with_extended_output=True,
                                 with_exceptions=False)

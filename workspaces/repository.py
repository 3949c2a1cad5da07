"""The repository a project lives in, driven through git: running git with one-line errors, its root and
branches, the run branches and worktrees it holds, and what removing one takes.

`workspaces.git` builds a run's workspace (worktree, checkpoints, merge) on these.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
from pathlib import Path

import git

from loopwright.errors import LoopwrightError

RUN_BRANCHES = "lw/"  # a run's branch is lw/<run id>
FALLBACK_NAME, FALLBACK_EMAIL = "loopwright", "loopwright@localhost"
NO_COMMITS = "the repository has no commits yet (make a first commit, e.g. git commit --allow-empty -m init)"
# variables that would point git somewhere other than the worktree it runs in
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                      "GIT_PREFIX", "GIT_NAMESPACE")


class WorkspaceError(LoopwrightError):
    """A git or workspace problem, said in one line with what to do about it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def git_message(stderr: str, stdout: str = "", status: int | None = None) -> str:
    """The useful line of a git failure: the fatal/error line, with a hint for the usual causes."""
    lines = [ln.strip() for ln in (stderr or stdout or "").splitlines() if ln.strip()]
    line = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), None)
    if line is None:
        line = next((ln for ln in lines if not ln.startswith(("hint:", "warning:"))), f"git exited with {status}")
    line = re.sub(r"^(fatal|error):\s*", "", line)
    if "dubious ownership" in line:
        where = re.search(r"'([^']+)'", line)
        line += f" (run `git config --global --add safe.directory {where.group(1) if where else '<path>'}`)"
    elif "index.lock" in line:
        line += " (another git command is running there, or one was killed: if none is running, delete the lock file)"
    return line


def git_call(g: git.Git, *args: str, env: dict[str, str] | None = None, istream=None,
         lossy: bool = False) -> tuple[int, str, str]:
    """Run git in `g`'s directory; return (status, stdout, stderr) without raising on a non-zero status.
    `lossy`: stdout that is not UTF-8 (a diff of a binary file) gets replacement characters instead of failing."""
    try:
        status, out, err = g.execute(["git", *args], with_extended_output=True, with_exceptions=False,
                                     strip_newline_in_stdout=False, stdout_as_string=not lossy, env=env,
                                     istream=istream)
    except git.GitCommandNotFound:
        where = g.working_dir
        if where and not Path(where).is_dir():
            raise WorkspaceError(f"directory not found: {where}") from None
        raise WorkspaceError("git was not found (install git 2.38 or newer and put it on PATH)") from None
    except OSError as e:
        raise WorkspaceError(f"could not run git {args[0]}: {e}") from None
    return status, out.decode("utf-8", "replace") if isinstance(out, bytes) else out or "", err


def run_git(g: git.Git, *args: str, what: str | None = None, env: dict[str, str] | None = None, istream=None) -> str:
    """Run git and return its stdout without the final newline; a failure becomes a one-line WorkspaceError."""
    status, out, err = git_call(g, *args, env=env, istream=istream)
    if status != 0:
        raise WorkspaceError(f"{what or 'git ' + args[0]} failed: {git_message(err, out, status)}")
    return out.removesuffix("\n")

_git_versions: dict[str, tuple[int, ...]] = {}


def has_merge_base_option(g: git.Git) -> bool:
    """`git merge-tree --merge-base` exists from git 2.40."""
    key = shutil.which("git") or "git"
    if key not in _git_versions:
        out = run_git(g, "version")
        _git_versions[key] = tuple(int(n) for n in re.findall(r"\d+", out)[:2])
    return _git_versions[key] >= (2, 40)


_identities: dict[str, tuple[tuple, set[str]]] = {}  # repository -> (its config stamps, what they configure)


def _config_stamps(where: Path) -> tuple | None:
    """What tells whether the identity git configures for the repository at `where` may have changed: the
    modification times of its config files and the variables that point git at others. None when its config is
    not the usual `.git/config` (a linked worktree, a submodule): ask git each time."""
    if not (where / ".git").is_dir():
        return None
    home = Path(os.environ.get("HOME", "~")).expanduser()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    stamps: list = [os.environ.get(v) for v in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM",
                                                   "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS")]
    for f in (where / ".git" / "config", home / ".gitconfig", xdg / "git" / "config", Path("/etc/gitconfig")):
        try:
            st = f.stat()
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def identity_env(g: git.Git) -> dict[str, str]:
    """Extra environment for a command that commits: the fallback identity for whatever git has none of.

    What git configures is remembered per repository until one of its config files changes (a daemon commits for
    every run of one repository; `_config_stamps`; a file they include is not watched)."""
    where = str(g.working_dir or "")
    stamps = _config_stamps(Path(where)) if where else None
    known = _identities.get(where)
    if stamps is not None and known is not None and known[0] == stamps:
        configured = known[1]
    else:
        status, out, _ = git_call(g, "config", "--get-regexp", r"^(user|author|committer)\.(name|email)$")
        configured = {line.split(" ", 1)[0].lower() for line in out.splitlines() if line.strip()} \
            if status == 0 else set()
        if stamps is not None:
            _identities[where] = (stamps, configured)
    env: dict[str, str] = {}
    for role in ("author", "committer"):
        var = f"GIT_{role.upper()}"
        if not (os.environ.get(f"{var}_NAME") or {f"{role}.name", "user.name"} & configured):
            env[f"{var}_NAME"] = FALLBACK_NAME
        if not (os.environ.get(f"{var}_EMAIL") or os.environ.get("EMAIL")
                or {f"{role}.email", "user.email"} & configured):
            env[f"{var}_EMAIL"] = FALLBACK_EMAIL
    return env


def clean_env() -> dict[str, str]:
    """This process's environment without the variables that would point git at another repository."""
    return {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}


def repo_root(path: Path) -> Path:
    """The top of the git work tree that contains `path` (remembered per path: a daemon asks for every run)."""
    return _repo_root(Path(path).absolute())


@functools.lru_cache(maxsize=256)
def _repo_root(path: Path) -> Path:
    if not path.exists():
        raise WorkspaceError(f"no such directory: {path}")
    where = path if path.is_dir() else path.parent
    status, out, err = git_call(git.Git(where), "rev-parse", "--show-toplevel")
    if status == 0 and out.strip():
        return Path(out.strip())
    if "not a git repository" in err:
        raise WorkspaceError(f"not a git repository: {path} (run `git init` first)")
    if status == 0 or "must be run in a work tree" in err:
        raise WorkspaceError(f"{path} is not inside a working tree (a bare repository or a .git directory): "
                             f"run loopwright in a checkout")
    raise WorkspaceError(f"not usable as a git repository: {path}: {git_message(err, out, status)}")


def has_commits(g: git.Git) -> bool:
    """Whether the repository has a commit: HEAD or a branch or tag names one. Not `rev-list --all`: it also reads
    the HEAD of every worktree, and one that `git worktree add` is making right now (a run starting) holds a
    placeholder for a moment, which fails it ("bad object worktrees/<id>/HEAD")."""
    if git_call(g, "rev-parse", "-q", "--verify", "HEAD^{commit}")[0] == 0:
        return True
    return bool(run_git(g, "for-each-ref", "--count=1", "--format=%(objectname)", "refs/heads", "refs/tags"))


def require_commits(root: Path) -> None:
    """WorkspaceError when the repository has no commit yet: a run has nothing to start from."""
    if not has_commits(git.Git(Path(root))):
        raise WorkspaceError(NO_COMMITS)


def current_branch(root: Path) -> str:
    """The branch checked out at `root` (normally the user's main worktree).

    Read from `.git/HEAD` when it names a branch whose own ref file holds a commit id (a daemon asks for every run
    it starts); anything else (a detached or unborn HEAD, a packed ref, a linked worktree, another ref storage) is
    asked of git, which also says what is wrong."""
    git_dir = Path(root) / ".git"
    try:
        head = (git_dir / "HEAD").read_text()
        if head.startswith("ref: refs/heads/") and head.endswith("\n"):
            name = head.removeprefix("ref: refs/heads/")[:-1]
            if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", (git_dir / "refs" / "heads" / name).read_text().strip()):
                return name
    except OSError:
        pass
    g = git.Git(Path(root))
    status, ref, err = git_call(g, "symbolic-ref", "-q", "HEAD")
    if status > 1:
        raise WorkspaceError(f"cannot read HEAD in {root}: {git_message(err, ref, status)}")
    if git_call(g, "rev-parse", "-q", "--verify", "HEAD^{commit}")[0] != 0:
        if status == 0 and not has_commits(g):
            raise WorkspaceError(NO_COMMITS)
        if status == 0:
            name = ref.strip().removeprefix("refs/heads/")
            raise WorkspaceError(f"branch {name} has no commits yet (commit something, or check out another branch)")
    if status == 1:
        raise WorkspaceError(f"HEAD is detached in {root}: set target_branch (--target BRANCH) or check out a branch")
    return ref.strip().removeprefix("refs/heads/")


def commit_of_branch(g: git.Git, branch: str) -> str | None:
    """The commit `branch` points at in `g`'s repository, or None when there is no such branch."""
    status, out, _ = git_call(g, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}")
    return out.strip() if status == 0 else None


def tip_of_branch(g: git.Git, branch: str) -> tuple[str, str] | None:
    """(commit, tree) at the head of `branch` in `g`'s repository, or None when there is no such branch."""
    status, out, _ = git_call(g, "rev-parse", f"refs/heads/{branch}^{{commit}}", f"refs/heads/{branch}^{{tree}}", "--")
    if status != 0:
        return None
    commit, tree = out.split()[:2]
    return commit, tree


def holds_nothing_new(root: Path, branch: str, target: str) -> bool:
    """True when `branch` has no commit `target` lacks (its tip is one of the target's commits): deleting it loses
    nothing, merged or not."""
    status, _, _ = git_call(git.Git(root), "merge-base", "--is-ancestor", f"refs/heads/{branch}",
                            f"refs/heads/{target}")
    return status == 0


def checkout_of(g: git.Git, branch: str) -> Path | None:
    """The worktree that has `branch` checked out, if any (`g` is at the main worktree)."""
    status, head, _ = git_call(g, "symbolic-ref", "-q", "HEAD")
    if status == 0 and head.strip() == f"refs/heads/{branch}":
        return Path(str(g.working_dir))  # the usual case, without reading every worktree's HEAD (a fleet has hundreds)
    path: str | None = None
    for field in run_git(g, "worktree", "list", "--porcelain", "-z").split("\0"):
        if field.startswith("worktree "):
            path = field[len("worktree "):]
        elif field == f"branch refs/heads/{branch}" and path:
            return Path(path)
    return None


def run_branches(root: Path) -> list[str]:
    """The run branches (`lw/...`) of the repository at `root`."""
    out = run_git(git.Git(Path(root)), "for-each-ref", "--format=%(refname)", f"refs/heads/{RUN_BRANCHES}",
                  what="listing the run branches")
    return [line.removeprefix("refs/heads/") for line in out.splitlines() if line.strip()]


def worktree_paths(root: Path) -> list[Path]:
    """The worktrees git has registered in the repository at `root` (the main one included)."""
    out = run_git(git.Git(Path(root)), "worktree", "list", "--porcelain", "-z", what="listing the worktrees")
    return [Path(f[len("worktree "):]) for f in out.split("\0") if f.startswith("worktree ")]


def discard(root: Path, path: Path | None, branch: str | None) -> None:
    """Remove a worktree (registered or only a directory) and/or a branch, whatever is left of them."""
    g = git.Git(Path(root))
    if path is not None:
        git_call(g, "worktree", "remove", "--force", str(path))
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        git_call(g, "worktree", "prune")
    if branch is not None:
        git_call(g, "branch", "-D", branch)


def tree_bytes(path: Path) -> int:
    """Bytes in the files under `path` (hard links counted once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total

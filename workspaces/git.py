"""A run's git workspace: its worktree and branch, checkpoint commits, rollback, squash merge, removal.

One idea, kept whole (~600 lines): every method works on the same worktree, branch and index. The
repository's plumbing it stands on (running git, branches, worktree listings) is `workspaces.repository`.

Git is driven through GitPython's command wrapper (`repo.git`): the pure-Python
index would be far too slow on large repositories. Checkpoints are built with
plumbing (`add`, `write-tree`, `commit-tree`, `update-ref`) in the run's own
worktree and index, so the user's branches, index and uncommitted changes are
never touched by them, user hooks never run, and nothing is spent on the
status report `git commit` computes. The squash merge is computed by
`git merge-tree --write-tree` without a checkout, and the target branch moves
only when the checkout that has it (if any) can follow without losing anything.

Every failure a user can hit is a `WorkspaceError` whose text is one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, cast

import git

from loopwright.workspaces.repository import (
    NO_COMMITS,
    RUN_BRANCHES,
    WorkspaceError,
    checkout_of,
    clean_env,
    commit_of_branch,
    discard,
    git_call,
    git_message,
    has_commits,
    has_merge_base_option,
    identity_env,
    repo_root,
    run_git,
    tip_of_branch,
    tree_bytes,
)

__all__ = ["Checkpoint", "MergeResult", "Workspace"]

TRAILER_RUN = "Loopwright-Run"
TRAILER_STEP = "Loopwright-Step"
# (command, worktree) -> (argv, environment) that run the command in a sandbox around the worktree
Jail = Callable[[str, Path], tuple[list[str], dict[str, str]]]


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


@dataclass
class SquashPlan:
    """A run's squash merge worked out onto the target's head (`Workspace.plan_squash`), to land under the git lock
    alone (`land`) or with others onto the same target (`land_together`)."""

    ws: Workspace
    target_branch: str
    message: str
    run_head: str
    ident: dict[str, str]
    stand_in_parent: str | None
    theirs: str | None
    planned: tuple[str, str, str] | None = None  # (the target head it was worked out onto, squash commit, tree)

    def onto(self, target: tuple[str, str]) -> MergeResult | tuple[str, str, str]:
        """The squash commit onto `target` (head, tree): (target head, commit, its tree), or why there is none."""
        if self.planned is not None and self.planned[0] == target[0]:
            return self.planned
        return self.ws._squash(self.target_branch, target, self.message, self.run_head, self.ident,
                               self.stand_in_parent, self.theirs)

    def land(self, before_move: Callable[[str, str], None] | None = None) -> MergeResult:
        """Under the git lock: onto the target's head now (worked out again if another merge moved it), then
        `before_move(target head, squash commit)`, then the user's checkout follows and the branch moves."""
        planned = self.onto(self.ws._target_tip(self.target_branch))
        if isinstance(planned, MergeResult):
            return planned
        if before_move is not None:
            before_move(*planned[:2])
        return self.ws._move_target(self.target_branch, *planned[:2])


def land_together(plans: list[tuple[SquashPlan, Callable[[str, str], None] | None]]
                  ) -> list[MergeResult | Exception]:
    """Under the git lock: several runs' squash merges onto one target, each onto the one before it, the user's
    checkout brought along and the branch moved once for all of them (a result or an error for each, in order).

    Each `before_move(head, commit)` names the commit its merge is squashed onto, as a merge alone does: a kill
    before the branch moves leaves intents that `finish_merge` completes (the first) or finds never happened (the
    others, merged again). When the user's checkout refuses the lot (uncommitted changes in the way), each lands
    alone, so only the runs that touch those files are refused."""
    first = plans[0][0]
    start = tip = first.ws._target_tip(first.target_branch)
    results: list[MergeResult | Exception | None] = [None] * len(plans)
    chained: list[tuple[int, str]] = []
    for i, (plan, before_move) in enumerate(plans):
        try:
            planned = plan.onto(tip)
            if isinstance(planned, MergeResult):
                results[i] = planned
                continue
            if before_move is not None:
                before_move(*planned[:2])
        except Exception as e:  # noqa: BLE001 — this run's failure is its own: the others go on
            results[i] = e
            continue
        tip = planned[1:]
        chained.append((i, planned[1]))
    if chained:
        try:
            moved = first.ws._move_target(first.target_branch, start[0], tip[0])
        except Exception as e:  # noqa: BLE001 — the target moved under us (by hand): each run tries again
            moved = None
            for i, _ in chained:
                results[i] = e
        if moved is not None and moved.status == "merged":
            for i, commit in chained:
                results[i] = MergeResult("merged", commit, f"{first.target_branch} is at {commit[:10]}")
        elif moved is not None:
            for i, _ in chained:
                plan, before_move = plans[i]
                try:
                    results[i] = plan.land(before_move)
                except Exception as e:  # noqa: BLE001
                    results[i] = e
    return cast(list[MergeResult | Exception], results)  # every entry was set above


@contextlib.contextmanager
def _message_file(text: str) -> Iterator[BinaryIO]:
    """A commit message as a file for `-F -`: a long message (a pasted goal) would not fit an argument."""
    with tempfile.TemporaryFile() as f:
        f.write(text.encode("utf-8", "replace"))
        f.seek(0)
        yield f


def _subject(message: str) -> str:
    """What `git log --format=%s` shows for a message: its first paragraph on one line."""
    return " ".join(message.strip().split("\n\n", 1)[0].split())


def _conflicted_paths(out: str) -> list[str]:
    """The conflicted paths from `git merge-tree --write-tree --name-only -z` output, with the kind of conflict."""
    files_part, _, messages = out.partition("\0\0")
    files = list(dict.fromkeys(f for f in files_part.split("\0")[1:] if f))
    kinds: dict[str, str] = {}
    fields = messages.split("\0")
    i = 0
    while i < len(fields) and fields[i].isdigit():  # <count> NUL <path>... NUL <type> NUL <message> NUL
        n = int(fields[i])
        paths, text = fields[i + 1:i + 1 + n], fields[i + 2 + n] if i + 2 + n < len(fields) else ""
        m = re.match(r"CONFLICT \(([^)]+)\)", text)
        for p in paths:
            if m and p in files:
                kinds.setdefault(p, m.group(1))
        i += n + 3
    return [f"{f} ({kinds[f]})" if f in kinds else f for f in files]


# -- a run's workspace -------------------------------------------------------------------------------


class Workspace:
    """One run's worktree, on branch `lw/<run_id>`, started from `base_commit`."""

    def __init__(self, root: Path, run_id: str, path: Path, branch: str, base_commit: str,
                 copy_files: Iterable[str] = ()):
        self.root, self.run_id, self.path = Path(root), run_id, Path(path)
        self.branch, self.base_commit = branch, base_commit
        self.copy_files = tuple(copy_files)
        self._repo: git.Repo | None = None
        self._ident: dict[str, str] | None = None
        self._tip: tuple[str, str] | None = None  # (commit, tree) of the run branch after this object's last checkpoint

    def __repr__(self) -> str:
        return f"Workspace(run_id={self.run_id!r}, path={str(self.path)!r}, branch={self.branch!r})"

    @property
    def repo(self) -> git.Repo:
        """The worktree's repository (GitPython); its `.git` runs commands in the worktree."""
        if self._repo is None:
            if not (self.path / ".git").exists():
                raise WorkspaceError(f"the worktree of run {self.run_id} is missing: {self.path} (restore it with "
                                     f"`git worktree add {self.path} {self.branch}`, or start a new run)")
            try:
                self._repo = git.Repo(self.path)
            except (git.InvalidGitRepositoryError, git.NoSuchPathError):
                raise WorkspaceError(f"the worktree of run {self.run_id} is broken: {self.path} "
                                     f"(run `git worktree prune` and start a new run)") from None
        return self._repo

    @property
    def _g(self) -> git.Git:
        return self.repo.git

    @property
    def _root_g(self) -> git.Git:
        return git.Git(self.root)

    def _identity(self) -> dict[str, str]:
        if self._ident is None:
            self._ident = identity_env(self._root_g)  # the repository's config is the worktree's
        return self._ident

    def _pathspec(self) -> list[str]:
        """Everything in the worktree except the copied files."""
        return ["--", ".", *(f":(exclude,literal){p}" for p in self.copy_files)]

    # -- creating ------------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, run_id: str, *, target_branch: str, worktrees_dir: Path,
               copy_files: Iterable[str] = (), setup_command: str | None = None,
               setup_timeout: float = 600, git_lock: contextlib.AbstractContextManager | None = None,
               jail: Jail | None = None, redact: Callable[[str], str] | None = None) -> Workspace:
        """Make `<worktrees_dir>/<run_id>` on a new branch `lw/<run_id>` at the head of `target_branch`.

        `setup_command` runs in the new worktree through `jail` (the sandbox's wrap), if given; `redact` hides
        key values in the output a failure quotes.

        `git_lock` is held only while the worktree is registered (concurrent `git worktree add`s in one
        repository read each other's half-written metadata): the branch is made before, its files are checked
        out after, in parallel with other runs'."""
        root = repo_root(Path(root))
        g = git.Git(root)
        copy_files = tuple(copy_files)
        for rel in copy_files:
            if Path(rel).is_absolute() or ".." in Path(rel).parts or not str(rel).strip():
                raise WorkspaceError(f"copy_files entry {rel!r} must be a path inside the repository, like .env")
        target_branch = target_branch.removeprefix("refs/heads/")
        path = Path(worktrees_dir).absolute() / run_id
        branch = f"{RUN_BRANCHES}{run_id}"
        tip = tip_of_branch(g, target_branch)
        if tip is None:
            if not has_commits(g):
                raise WorkspaceError(NO_COMMITS)
            raise WorkspaceError(f"no branch '{target_branch}' in {root} "
                                 f"(pass --target BRANCH with an existing branch)")
        base = tip[0]
        status, out, err = git_call(g, "update-ref", "-m", f"branch: created from {target_branch}",
                                    f"refs/heads/{branch}", base, "0" * len(base))  # only if it does not exist yet
        if status != 0:
            raise WorkspaceError(f"could not create the branch {branch}: {git_message(err, out, status)}")
        with git_lock or contextlib.nullcontext():
            status, out, err = git_call(g, "worktree", "add", "--quiet", "--no-checkout", str(path), branch)
        if status != 0:
            git_call(g, "update-ref", "-d", f"refs/heads/{branch}", base)
            raise WorkspaceError(f"could not create the worktree {path}: {git_message(err, out, status)}")
        ws = cls(root, run_id, path, branch, base, copy_files)
        ws._tip = tip  # the branch starts at the target's head: its first checkpoint need not ask git where it is
        try:
            status, out, err = git_call(git.Git(path), "checkout", "--quiet")
            if status != 0:
                raise WorkspaceError(f"could not check out {base[:10]} in {path}: {git_message(err, out, status)}")
            ws._copy_in()
            if setup_command:
                ws.run_setup(setup_command, setup_timeout, jail=jail, redact=redact)
        except BaseException:
            ws._discard(git_lock)
            raise
        return ws

    @classmethod
    def open(cls, root: Path, run_id: str, path: Path, branch: str, base_commit: str,
             copy_files: Iterable[str] = ()) -> Workspace:
        """The workspace of an existing run (to resume it, roll it back, merge or remove it)."""
        return cls(root, run_id, path, branch, base_commit, copy_files)

    def _copy_in(self) -> None:
        for rel in self.copy_files:
            src, dst = self.root / rel, self.path / rel
            try:
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                elif src.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            except OSError as e:
                raise WorkspaceError(f"could not copy {rel} into the worktree: {e.strerror or e}") from None

    def run_setup(self, command: str, timeout: float, *, jail: Jail | None = None,
                  redact: Callable[[str], str] | None = None) -> None:
        """Run the project's setup command in the worktree, through `jail` (the sandbox's wrap) if given; a failure
        or a timeout is a WorkspaceError (its quoted output through `redact`)."""
        if jail is not None:
            try:
                argv, env = jail(command, self.path)
            except Exception as e:  # noqa: BLE001 — a policy that does not fit this repository, said in one line
                raise WorkspaceError(f"the setup command cannot run in the sandbox: {e}") from None
        else:
            argv, env = ["bash", "-c", command], clean_env()
        try:
            # own process group, so a timeout also kills what the command started (npm, pip...)
            proc = subprocess.Popen(argv, cwd=self.path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as e:
            raise WorkspaceError(f"could not start the setup command with bash: {e.strerror or e}") from None
        try:
            out, _ = proc.communicate(timeout=timeout)
        except BaseException as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            if isinstance(e, subprocess.TimeoutExpired):
                raise WorkspaceError(f"setup command timed out after {timeout:g}s: `{command}` "
                                     f"(raise workspace.setup_timeout or make it faster)") from None
            raise
        if proc.returncode != 0:
            text = out.decode("utf-8", "replace")
            lines = [ln.strip() for ln in (redact(text) if redact else text).splitlines() if ln.strip()]
            tail = " | ".join(lines[-3:])[-300:] or "(no output)"
            raise WorkspaceError(f"setup command failed (exit {proc.returncode}): `{command}`: {tail} "
                                 f"(the worktree was removed; fix workspace.setup_command)")

    def _discard(self, git_lock: contextlib.AbstractContextManager | None = None) -> None:
        """Undo a half-made workspace: its worktree and branch."""
        with git_lock or contextlib.nullcontext():
            discard(self.root, self.path, self.branch)

    # -- checkpoints ---------------------------------------------------------------------------------

    def checkpoint(self, message: str, *, step: int) -> Checkpoint | None:
        """Commit everything that changed (gitignore respected, copied files left out); None if nothing did.

        After its first checkpoint a workspace remembers the branch's tip, so the next one does not ask git for
        it: `update-ref` moves the branch only from that tip, and a tip that moved (the agent committed, reset)
        sends it back to git's view."""
        return self._commit_worktree(message, step, remembered=True)

    def _commit_worktree(self, message: str, step: int, *, remembered: bool) -> Checkpoint | None:
        g = self._g
        trusted = remembered and self._tip is not None and not self.copy_files and self._on_own_branch()
        cached = self._tip if trusted else None
        head, head_tree = cached or self._verified_tip()
        run_git(g, "add", "-A", *self._pathspec(), what="staging the worktree")
        tree = run_git(g, "write-tree", what="writing the checkpoint tree")
        if self.copy_files:
            copied = [f":(literal){p}" for p in self.copy_files]
            if run_git(g, "diff-tree", "-r", "--name-only", "--no-renames", head_tree, tree, "--", *copied):
                # the agent staged them itself (`git add -A`): back to the committed version
                status, out, err = git_call(g, "reset", "-q", "--no-refresh", "--", *copied)
                if status not in (0, 1) or "fatal" in err:
                    raise WorkspaceError(f"unstaging the copied files failed: {git_message(err, out, status)}")
                tree = run_git(g, "write-tree", what="writing the checkpoint tree")
        if tree == head_tree:
            if cached is None or self._branch_file_holds(head):
                return None
            head, head_tree = self._verified_tip()  # the branch moved: nothing new only if its tree is this one
            if tree == head_tree:
                return None
        text = f"{message.strip() or f'step {step}'}\n\n{TRAILER_RUN}: {self.run_id}\n{TRAILER_STEP}: {step}\n"
        with _message_file(text) as f:
            sha = run_git(g, "commit-tree", "--no-gpg-sign", tree, "-p", head, "-F", "-", istream=f,
                          env=self._identity(), what="committing the checkpoint")
        status, out, err = git_call(g, "update-ref", "-m", f"loopwright: checkpoint (step {step})", "HEAD", sha, head)
        if status != 0:
            self._tip = None
            if cached is not None:  # the branch moved since the last checkpoint: again, from git's view
                return self._commit_worktree(message, step, remembered=False)
            raise WorkspaceError(f"moving the run branch failed: {git_message(err, out, status)}")
        self._tip = (sha, tree)
        return Checkpoint(sha=sha, step=step, message=_subject(text))

    def _verified_tip(self) -> tuple[str, str]:
        """(commit, tree) of HEAD, from git, after making sure HEAD is the run branch."""
        head, head_tree, ref = run_git(self._g, "rev-parse", "HEAD", "HEAD^{tree}", "--symbolic-full-name",
                                       "HEAD").split()
        if ref != f"refs/heads/{self.branch}":
            raise WorkspaceError(f"the worktree of run {self.run_id} is not on its branch {self.branch} "
                                 f"(HEAD is {ref if ref != 'HEAD' else 'detached'}): "
                                 f"run `git -C {self.path} switch {self.branch}`")
        return head, head_tree

    def _on_own_branch(self) -> bool:
        """Whether the worktree's HEAD file names the run branch (read directly; anything unusual, such as
        another ref storage, reads as no and is asked of git)."""
        admin = self._admin_dir()
        try:
            return admin is not None and (admin / "HEAD").read_text() == f"ref: refs/heads/{self.branch}\n"
        except OSError:
            return False

    def _branch_file_holds(self, sha: str) -> bool:
        """Whether the run branch's own ref file says `sha` (read directly, like `_on_own_branch`; a packed ref
        or another ref storage reads as no and is asked of git)."""
        admin = self._admin_dir()
        try:
            common = admin / (admin / "commondir").read_text().strip() if admin is not None else None
            return common is not None and (common / "refs" / "heads" / self.branch).read_text().strip() == sha
        except OSError:
            return False

    def checkpoints(self) -> list[Checkpoint]:
        """The run's checkpoint commits since `base_commit`, oldest first."""
        fmt = (f"%H%x00%s%x00%(trailers:key={TRAILER_RUN},valueonly,separator=%x2C)"
               f"%x00%(trailers:key={TRAILER_STEP},valueonly,separator=%x2C)%x1e")
        since = f"{self.base_commit}..refs/heads/{self.branch}"
        out = run_git(self._root_g, "log", "--reverse", f"--format={fmt}", since,
                      what=f"reading the checkpoints of run {self.run_id}")
        points = []
        for record in out.split("\x1e"):
            parts = record.strip("\n").split("\x00")
            if len(parts) == 4 and parts[2].strip() == self.run_id and parts[3].strip().isdigit():
                points.append(Checkpoint(sha=parts[0], step=int(parts[3].strip()), message=parts[1]))
        return points

    def head(self) -> str:
        """The commit checked out in the worktree."""
        return run_git(self._g, "rev-parse", "HEAD")

    def clear_stale_lock(self) -> bool:
        """Remove the worktree's index.lock left by a process that was killed mid-checkpoint.

        Only for a run whose owner is known to be dead: a live git command holds that lock.
        """
        admin = self._admin_dir()
        lock = admin / "index.lock" if admin is not None else None
        if lock is not None and lock.exists():
            lock.unlink()
            return True
        return False

    def is_dirty(self) -> bool:
        """Whether the worktree has changes a checkpoint would commit."""
        out = run_git(self._g, "status", "--porcelain", "--untracked-files=normal", *self._pathspec())
        return bool(out.strip())

    # -- rollback ------------------------------------------------------------------------------------

    def reset_to(self, sha: str) -> None:
        """Reset the worktree and run branch to `sha` (base_commit or one of this run's commits).

        Untracked files are removed; ignored ones (node_modules, .env) and the copied files are kept.
        """
        g = self._g
        status, full, _ = git_call(g, "rev-parse", "-q", "--verify", f"{sha}^{{commit}}")
        full = full.strip()
        if status != 0:
            raise WorkspaceError(f"unknown commit {sha!r} (pick one from `loopwright checkpoints {self.run_id}`)")
        if full != self.base_commit and not self._is_own(full):
            raise WorkspaceError(f"{sha[:12]} is not a checkpoint of run {self.run_id} "
                                 f"(pick one from `loopwright checkpoints {self.run_id}`)")
        self._tip = None
        run_git(g, "symbolic-ref", "HEAD", f"refs/heads/{self.branch}", what="switching to the run branch")
        run_git(g, "reset", "--quiet", "--hard", full, what=f"resetting the worktree to {full[:10]}")
        run_git(g, "clean", "-ffdq", *self._pathspec(), what="removing untracked files")
        self._copy_in()

    def _is_own(self, sha: str) -> bool:
        """On the run branch after base, or a commit of this run that a rollback left behind."""
        g = self._g
        if git_call(g, "merge-base", "--is-ancestor", self.base_commit, sha)[0] != 0:
            return False
        if git_call(g, "merge-base", "--is-ancestor", sha, f"refs/heads/{self.branch}")[0] == 0:
            return True
        out = run_git(g, "log", "-1", f"--format=%(trailers:key={TRAILER_RUN},valueonly)", sha)
        return self.run_id in out.split()

    # -- looking at the work -------------------------------------------------------------------------

    def _with_worktree_index(self, *args: str) -> str:
        """Run a git command against a scratch copy of the index with all of the worktree added to it.

        The real index stays as it is: looking at the work must not change what a checkpoint sees.
        """
        g = self._g
        index = Path(run_git(g, "rev-parse", "--path-format=absolute", "--git-path", "index"))
        with tempfile.TemporaryDirectory(prefix="lw-index-") as tmp:
            scratch = Path(tmp) / "index"
            if index.exists():
                shutil.copy2(index, scratch)
            env = {"GIT_INDEX_FILE": str(scratch)}
            run_git(g, "add", "-A", *self._pathspec(), env=env, what="reading the worktree")
            status, out, err = git_call(g, *args, env=env, lossy=True)
            if status != 0:
                raise WorkspaceError(f"git {args[0]} failed: {git_message(err, '', status)}")
        return out

    def diff(self, against: str | None = None) -> str:
        """Unified diff from `against` (default base_commit) to the worktree, untracked files included."""
        return self._with_worktree_index("diff", "--cached", "--no-color", "--no-ext-diff", "--src-prefix=a/",
                                         "--dst-prefix=b/", against or self.base_commit, *self._pathspec())

    def changed_files(self) -> list[str]:
        """Paths that differ between base_commit and the worktree (added, changed or deleted)."""
        out = self._with_worktree_index("diff", "--cached", "--name-only", "--no-renames", "-z", self.base_commit,
                                        *self._pathspec())
        return [p for p in out.split("\0") if p]

    # -- merging -------------------------------------------------------------------------------------

    def squash_merge(self, target_branch: str, message: str,
                     git_lock: contextlib.AbstractContextManager | None = None,
                     before_move: Callable[[str, str], None] | None = None) -> MergeResult:
        """Squash the run branch's changes since base_commit onto the current head of `target_branch`.

        The user's checkout of the target branch (if any) follows the branch; the merge is refused
        (status "conflict") when it would overwrite the user's uncommitted changes. Uncommitted work
        in the run's worktree is not included: checkpoint first. The merge is computed before `git_lock`
        is taken (a conflict, or nothing to merge, is known then); under it, the target is read again and
        only when another merge moved it meanwhile is the merge computed again, before the checkout
        follows and the branch moves. `before_move(target head, squash commit)` is called under the lock right
        before the checkout and the branch move (to record the merge as begun: see `finish_merge`).
        """
        plan = self.plan_squash(target_branch, message)
        if isinstance(plan, MergeResult):
            return plan
        with git_lock or contextlib.nullcontext():
            return plan.land(before_move)

    def plan_squash(self, target_branch: str, message: str) -> SquashPlan | MergeResult:
        """The squash merge worked out onto the target's head as it is now (no lock needed); a MergeResult when
        there is nothing to merge or it conflicts."""
        g = self._root_g
        target_branch = target_branch.removeprefix("refs/heads/")
        branch = f"refs/heads/{self.branch}"
        target = f"refs/heads/{target_branch}"
        status, out, err = git_call(g, "rev-parse", f"{branch}^{{commit}}", f"{branch}^{{tree}}",
                                    f"{self.base_commit}^{{tree}}", f"{target}^{{commit}}", f"{target}^{{tree}}", "--")
        if status != 0:
            if commit_of_branch(g, self.branch) is None:
                raise WorkspaceError(f"the run branch {self.branch} no longer exists; there is nothing to merge")
            self._target_tip(target_branch)  # says so when the target is what is missing
            raise WorkspaceError(f"reading the run branch {self.branch} failed: {git_message(err, out, status)}")
        run_head, run_tree, base_tree, target_head, target_tree = out.split()[:5]
        if run_tree == base_tree:
            return MergeResult("nothing", None, f"run {self.run_id} changed nothing")
        ident = self._ident if self._ident is not None else identity_env(g)  # the checkpoints' if they ran
        stand_in_parent = theirs = None
        if not has_merge_base_option(g):
            # git < 2.40: the same three-way merge over stand-in commits whose only common ancestor is the base
            # commit: the run's tree and (in `_squash`) the target's, each as a child of it
            stand_in_parent = self.base_commit
            theirs = run_git(g, "commit-tree", "--no-gpg-sign", run_tree, "-p", stand_in_parent, "-m", "run", env=ident)

        plan = SquashPlan(self, target_branch, message, run_head, ident, stand_in_parent, theirs)
        planned = plan.onto((target_head, target_tree))
        if isinstance(planned, MergeResult):
            return planned
        plan.planned = planned
        return plan

    def finish_merge(self, target_branch: str, onto: str, commit: str,
                     git_lock: contextlib.AbstractContextManager | None = None) -> MergeResult | None:
        """A merge that began (moving `target_branch` from `onto` to the squash commit `commit`) and was cut short:
        recognised as done when the target's history has `commit`, finished when the target is still at `onto`;
        None when neither (the target moved on without it: the merge never happened)."""
        g = self._root_g
        target_branch = target_branch.removeprefix("refs/heads/")
        if git_call(g, "merge-base", "--is-ancestor", commit, f"refs/heads/{target_branch}")[0] == 0:
            return MergeResult("merged", commit, f"{target_branch} has {commit[:10]} already")
        with git_lock or contextlib.nullcontext():
            if commit_of_branch(g, target_branch) != onto:
                return None
            return self._move_target(target_branch, onto, commit)

    def _target_tip(self, target_branch: str) -> tuple[str, str]:
        """(commit, tree) at the head of the target branch."""
        tip = tip_of_branch(self._root_g, target_branch)
        if tip is None:
            raise WorkspaceError(f"no branch '{target_branch}' to merge into (pass --target BRANCH)")
        return tip

    def _squash(self, target_branch: str, target: tuple[str, str], message: str, run_head: str,
                ident: dict[str, str], stand_in_parent: str | None,
                theirs: str | None) -> MergeResult | tuple[str, str, str]:
        """The squash commit of the run's changes onto `target` (target head, squash commit, its tree), or why
        there is none."""
        g = self._root_g
        target_head, target_tree = target
        if stand_in_parent is None:
            ours, extra = target_head, [f"--merge-base={self.base_commit}"]
            theirs = run_head
        else:
            assert theirs is not None, "a stand-in target comes with the run's side of the merge"
            ours = run_git(g, "commit-tree", "--no-gpg-sign", target_tree, "-p", stand_in_parent, "-m", "target",
                           env=ident)
            extra = []
        status, out, err = git_call(g, "merge-tree", "--write-tree", "--name-only", "-z", *extra, ours, theirs)
        if status == 1:
            files = _conflicted_paths(out)
            shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
            return MergeResult("conflict", None, f"conflict in {shown or 'some files'}")
        if status != 0:
            raise WorkspaceError(f"git merge-tree failed: {git_message(err, '', status)}")
        tree = out.split("\0", 1)[0].strip()
        if tree == target_tree:
            return MergeResult("nothing", None, f"{target_branch} already has the changes of run {self.run_id}")
        with _message_file(message.strip() or f"loopwright: run {self.run_id}") as f:
            commit = run_git(g, "commit-tree", tree, "-p", target_head, "-F", "-", istream=f, env=ident,
                             what="writing the merge commit")
        return target_head, commit, tree

    def _move_target(self, target_branch: str, target_head: str, commit: str) -> MergeResult:
        """Bring the target's checkout (if any) from `target_head` to `commit`, then move the branch."""
        g = self._root_g
        checkout = checkout_of(g, target_branch)
        if checkout is not None and not checkout.is_dir():
            checkout = None  # a stale worktree entry: there are no files to bring along
        if checkout is not None:
            cg = git.Git(checkout)
            git_call(cg, "update-index", "-q", "--refresh")  # stat-only changes must not count as edits
            status, out, err = git_call(cg, "read-tree", "-m", "-u", target_head, commit)
            if status != 0:
                return MergeResult("conflict", None, _overlap_detail(err, checkout))
        status, out, err = git_call(g, "update-ref", "-m", f"loopwright: squash-merge {self.branch}",
                                f"refs/heads/{target_branch}", commit, target_head)
        if status != 0:
            if checkout is not None:  # put the user's files back where their branch is
                git_call(git.Git(checkout), "read-tree", "-m", "-u", commit, target_head)
            raise WorkspaceError(f"{target_branch} moved while merging ({git_message(err, out, status)}): "
                                 f"merge again")
        return MergeResult("merged", commit, f"{target_branch} is at {commit[:10]}")

    # -- removal -------------------------------------------------------------------------------------

    def remove(self, *, delete_branch: bool) -> int:
        """Remove the worktree (and the branch if asked); return the bytes freed."""
        g = self._root_g
        freed = self.disk_bytes()
        if self.path.exists():
            status, out, err = git_call(g, "worktree", "remove", "--force", str(self.path))
            if status != 0:
                raise WorkspaceError(f"could not remove the worktree {self.path}: {git_message(err, out, status)}")
        git_call(g, "worktree", "prune")
        if delete_branch:
            status, out, err = git_call(g, "branch", "-D", self.branch)
            if status != 0 and "not found" not in err:
                raise WorkspaceError(f"could not delete branch {self.branch}: {git_message(err, out, status)}")
        return freed

    def disk_bytes(self) -> int:
        """Bytes the worktree holds: its files and its directory inside the repository's .git (0 once removed)."""
        if not self.path.exists():
            return 0
        admin = self._admin_dir()
        return tree_bytes(self.path) + (tree_bytes(admin) if admin is not None else 0)

    def _admin_dir(self) -> Path | None:
        """The worktree's directory inside the repository's .git (its index, HEAD, logs)."""
        try:
            text = (self.path / ".git").read_text()
        except OSError:
            return None
        if not text.startswith("gitdir:"):
            return None
        admin = Path(text[len("gitdir:"):].strip())
        return admin if admin.is_dir() else None


def _overlap_detail(err: str, checkout: Path) -> str:
    files = re.findall(r"(?:Entry|working tree file) '([^']+)'", err)
    files += [ln.strip() for ln in err.splitlines() if ln.startswith("\t")]
    files = list(dict.fromkeys(files))
    if files:
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        return f"your uncommitted changes to {shown} overlap the run's changes (commit or stash them, then merge again)"
    return f"could not update your checkout at {checkout}: {git_message(err)}"

"""Git workspaces in real repositories: worktrees, checkpoints, rollback, diff, squash merge, removal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import git as git_module
import pytest
from support import git

from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError, current_branch, has_merge_base_option, repo_root


def _ws(repo: Path, run_id: str = "r1", **kw) -> Workspace:
    return Workspace.create(repo, run_id, target_branch="main", worktrees_dir=repo.parent / "worktrees", **kw)


@pytest.fixture
def ws(repo) -> Workspace:
    return _ws(repo)


def _files_in(sha: str, cwd: Path) -> list[str]:
    return sorted(git(cwd, "ls-tree", "-r", "--name-only", sha).splitlines())


def _user_state(repo: Path) -> dict:
    """Everything of the user's checkout that loopwright must leave alone."""
    return {"status": git(repo, "status", "--porcelain", "--untracked-files=all"),
            "staged": git(repo, "diff", "--cached"), "unstaged": git(repo, "diff"),
            "index": git(repo, "ls-files", "--stage"), "main": git(repo, "rev-parse", "main"),
            "head": git(repo, "symbolic-ref", "HEAD")}


def _make_user_dirty(repo: Path) -> None:
    (repo / "calc.py").write_text((repo / "calc.py").read_text() + "# user's unstaged edit\n")
    (repo / "staged.txt").write_text("user's staged file\n")
    git(repo, "add", "staged.txt")
    (repo / "scratch.txt").write_text("user's untracked file\n")


# -- the user's repository ---------------------------------------------------------------------------


def test_not_a_repository(tmp_path):
    with pytest.raises(WorkspaceError) as e:
        repo_root(tmp_path)
    assert str(e.value) == f"not a git repository: {tmp_path} (run `git init` first)"
    with pytest.raises(WorkspaceError, match="no such directory"):
        repo_root(tmp_path / "missing" / "deeper")


def test_repo_root_is_the_top_from_a_subdirectory(repo):
    (repo / "pkg" / "sub").mkdir(parents=True)
    assert repo_root(repo / "pkg" / "sub") == repo.resolve()
    assert repo_root(repo / "calc.py") == repo.resolve()


def test_repository_without_commits(tmp_path):
    git(tmp_path, "init", "-q", "-b", "main")
    expected = "the repository has no commits yet (make a first commit, e.g. git commit --allow-empty -m init)"
    with pytest.raises(WorkspaceError) as e:
        current_branch(tmp_path)
    assert str(e.value) == expected
    with pytest.raises(WorkspaceError) as e:
        Workspace.create(tmp_path, "r", target_branch="main", worktrees_dir=tmp_path / "wt")
    assert str(e.value) == expected


def test_current_branch_and_detached_head(repo, tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    assert current_branch(repo) == "main"
    assert not trace.exists()  # read from .git/HEAD and the branch's ref file: no git process (a daemon's every run)
    git(repo, "checkout", "-q", "-b", "feature/x")
    assert current_branch(repo) == "feature/x"
    git(repo, "pack-refs", "--all")  # no ref file: git says
    assert current_branch(repo) == "feature/x" and "symbolic-ref" in trace.read_text()
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(WorkspaceError, match=r"HEAD is detached.*set target_branch .*or check out a branch"):
        current_branch(repo)


def test_unknown_target_branch(repo):
    with pytest.raises(WorkspaceError, match=r"no branch 'nope' in .*--target BRANCH"):
        Workspace.create(repo, "r", target_branch="nope", worktrees_dir=repo.parent / "wt")


# -- creating ----------------------------------------------------------------------------------------


def test_create_makes_a_worktree_on_its_own_branch(repo, ws):
    assert ws.path == repo.parent / "worktrees" / "r1"
    assert (ws.path / "calc.py").read_text() == (repo / "calc.py").read_text()
    assert ws.branch == "lw/r1" and ws.run_id == "r1" and ws.root == repo.resolve()
    assert git(ws.path, "symbolic-ref", "HEAD") == "refs/heads/lw/r1"
    assert ws.base_commit == git(repo, "rev-parse", "main") == ws.head()
    assert str(ws.path) in git(repo, "worktree", "list")
    assert not ws.is_dirty() and ws.checkpoints() == []


def test_create_with_an_existing_run_branch_is_one_line(repo, ws):
    with pytest.raises(WorkspaceError) as e:
        Workspace.create(repo, "r1", target_branch="main", worktrees_dir=repo.parent / "other")
    assert "lw/r1" in str(e.value) and "\n" not in str(e.value)


def test_a_worktree_that_cannot_be_added_leaves_no_branch(repo):
    (repo.parent / "wt" / "r2" / "in-the-way").mkdir(parents=True)
    with pytest.raises(WorkspaceError) as e:
        Workspace.create(repo, "r2", target_branch="main", worktrees_dir=repo.parent / "wt")
    assert "could not create the worktree" in str(e.value) and "\n" not in str(e.value)
    assert "lw/r2" not in git(repo, "branch", "--list", "lw/*")


def test_many_runs_starting_at_once_from_threads_all_get_a_worktree(repo):
    """The fleet's case: runs start together; only `git worktree add` is under the lock, and none of them fails."""
    from concurrent.futures import ThreadPoolExecutor

    from loopwright.runtime.merging import GIT_LOCK

    def create(i: int) -> Workspace:
        return Workspace.create(repo, f"s{i}", target_branch="main", worktrees_dir=repo.parent / "wt",
                                git_lock=GIT_LOCK)

    with ThreadPoolExecutor(8) as pool:
        spaces = list(pool.map(create, range(24)))
    assert all((w.path / "calc.py").exists() and w.head() == w.base_commit for w in spaces)
    assert git(repo, "worktree", "list").count("/wt/s") == 24


def test_setup_command_runs_in_the_worktree(repo):
    ws = _ws(repo, "s1", setup_command="echo ok > setup.out; pwd > where.out")
    assert (ws.path / "setup.out").read_text() == "ok\n"
    assert Path((ws.path / "where.out").read_text().strip()).resolve() == ws.path.resolve()


def test_setup_command_failure_is_reported_and_cleaned_up(repo):
    with pytest.raises(WorkspaceError) as e:
        _ws(repo, "s2", setup_command="echo preparing; echo 'npm ERR! missing thing' >&2; exit 3")
    msg = str(e.value)
    assert msg.startswith("setup command failed (exit 3)") and "npm ERR! missing thing" in msg and "\n" not in msg
    assert not (repo.parent / "worktrees" / "s2").exists()
    assert "lw/s2" not in git(repo, "branch", "--list", "lw/*")


def test_setup_command_timeout(repo):
    with pytest.raises(WorkspaceError, match=r"timed out after 0.5s"):
        _ws(repo, "s3", setup_command="sleep 30 & sleep 30", setup_timeout=0.5)
    assert not (repo.parent / "worktrees" / "s3").exists()


# -- checkpoints -------------------------------------------------------------------------------------


def test_checkpoint_commits_changes_with_trailers(ws):
    (ws.path / "calc.py").write_text("changed\n")
    (ws.path / "pkg").mkdir()
    (ws.path / "pkg" / "new.py").write_text("untracked\n")
    (ws.path / "debug.log").write_text("ignored\n")
    (ws.path / "test_calc.py").unlink()
    cp = ws.checkpoint("step one", step=1)
    assert cp is not None and cp.sha == ws.head() == git(ws.path, "rev-parse", "lw/r1")
    assert (cp.step, cp.message) == (1, "step one")
    assert git(ws.path, "rev-parse", f"{cp.sha}^") == ws.base_commit
    assert _files_in(cp.sha, ws.path) == [".gitignore", "calc.py", "pkg/new.py"]
    trailers = git(ws.path, "log", "-1", "--format=%(trailers)", cp.sha).splitlines()
    assert trailers == ["Loopwright-Run: r1", "Loopwright-Step: 1"]
    assert git(ws.path, "log", "-1", "--format=%s", cp.sha) == "step one"
    assert ws.is_dirty() is False and (ws.path / "debug.log").exists()


def test_checkpoint_with_nothing_changed_returns_none(ws):
    assert ws.checkpoint("nothing yet", step=1) is None
    (ws.path / "a.txt").write_text("a")
    first = ws.checkpoint("a", step=2)
    (ws.path / "only.log").write_text("ignored files are not changes")
    assert ws.checkpoint("still nothing", step=3) is None
    assert ws.head() == first.sha


def _checkpoint_counting_git(ws: Workspace, tmp_path: Path, message: str, step: int):
    """A checkpoint, and the git commands it ran (GIT_TRACE)."""
    trace = tmp_path / f"trace-{step}"
    os.environ["GIT_TRACE"] = str(trace)
    try:
        cp = ws.checkpoint(message, step=step)
    finally:
        del os.environ["GIT_TRACE"]
    return cp, [ln.split("built-in: git ", 1)[1] for ln in trace.read_text().splitlines() if "built-in: git " in ln]


def test_a_checkpoint_after_a_checkpoint_does_not_ask_git_for_the_tip(ws, tmp_path):
    """Nor does the first one of a new worktree (its branch starts where the target was); a workspace opened again
    (a resumed run) asks git once."""
    (ws.path / "a.txt").write_text("a")
    first, ran = _checkpoint_counting_git(ws, tmp_path, "a", 1)
    assert [c.split()[0] for c in ran] == ["add", "write-tree", "config", "commit-tree", "update-ref"]
    (ws.path / "b.txt").write_text("b")
    second, ran = _checkpoint_counting_git(ws, tmp_path, "b", 2)
    assert [c.split()[0] for c in ran] == ["add", "write-tree", "commit-tree", "update-ref"]
    assert git(ws.path, "rev-parse", f"{second.sha}^") == first.sha == ws.checkpoints()[0].sha
    nothing, ran = _checkpoint_counting_git(ws, tmp_path, "nothing", 3)
    assert nothing is None and [c.split()[0] for c in ran] == ["add", "write-tree"]
    reopened = Workspace.open(ws.root, ws.run_id, ws.path, ws.branch, ws.base_commit)
    (ws.path / "c.txt").write_text("c")
    third, ran = _checkpoint_counting_git(reopened, tmp_path, "c", 4)
    assert [c.split()[0] for c in ran] == ["rev-parse", "add", "write-tree", "commit-tree", "update-ref"]
    assert git(ws.path, "rev-parse", f"{third.sha}^") == second.sha


def test_the_identity_git_configures_is_asked_once_until_the_config_changes(ws, tmp_path):
    """Each run's first commit needs to know whether git has a name and e-mail (else loopwright's fallback): asked
    of git once per repository, again when its config changes."""
    runs = [Workspace.open(ws.root, ws.run_id, ws.path, ws.branch, ws.base_commit) for _ in range(3)]
    asked = []
    for step, run in enumerate(runs, 1):
        (ws.path / f"f{step}.txt").write_text("x")
        cp, ran = _checkpoint_counting_git(run, tmp_path, f"f{step}", step)
        asked.append("config" in [c.split()[0] for c in ran])
        if step == 2:
            git(ws.root, "config", "user.name", "Someone Else")
    assert asked == [True, False, True]
    assert git(ws.root, "log", "-1", "--format=%an", f"refs/heads/{ws.branch}") == "Someone Else"


def test_the_remembered_tip_gives_way_to_what_the_agent_did_with_git(ws):
    (ws.path / "a.txt").write_text("a")
    first = ws.checkpoint("a", step=1)
    (ws.path / "b.txt").write_text("b")  # the agent commits by hand: the next checkpoint goes on top of it
    git(ws.path, "add", "b.txt")
    git(ws.path, "commit", "-qm", "by hand")
    by_hand = ws.head()
    assert ws.checkpoint("nothing new", step=2) is None
    (ws.path / "c.txt").write_text("c")
    third = ws.checkpoint("c", step=3)
    assert git(ws.path, "rev-parse", f"{third.sha}^") == by_hand
    # the agent resets to the start and rewrites what the first checkpoint had: a checkpoint, not "nothing changed"
    git(ws.path, "reset", "-q", "--hard", ws.base_commit)
    (ws.path / "a.txt").write_text("a")
    again = ws.checkpoint("a again", step=4)
    assert again is not None and git(ws.path, "rev-parse", f"{again.sha}^") == ws.base_commit
    assert git(ws.path, "rev-parse", f"{again.sha}^{{tree}}") == git(ws.path, "rev-parse", f"{first.sha}^{{tree}}")
    git(ws.path, "reset", "-q", "--soft", ws.base_commit)  # the branch loses the commit, the files stay
    kept = ws.checkpoint("a kept", step=5)
    assert kept is not None and git(ws.path, "rev-parse", f"{kept.sha}^") == ws.base_commit
    git(ws.path, "switch", "-q", "-c", "elsewhere")  # and a branch of its own is still refused
    (ws.path / "d.txt").write_text("d")
    with pytest.raises(WorkspaceError, match="not on its branch lw/r1"):
        ws.checkpoint("d", step=6)


def test_checkpoints_lists_the_run_commits_oldest_first(ws):
    (ws.path / "a.txt").write_text("a")
    one = ws.checkpoint("add a", step=1)
    (ws.path / "b.txt").write_text("b")
    two = ws.checkpoint("add b\n\nwith a body", step=4)
    (ws.path / "c.txt").write_text("c")  # a commit the agent made by hand: no trailers, not a checkpoint
    git(ws.path, "add", "c.txt")
    git(ws.path, "commit", "-qm", "manual")
    assert ws.checkpoints() == [one, two]
    assert two.message == "add b" and git(ws.path, "rev-parse", f"{two.sha}^") == one.sha


def test_copied_env_is_never_committed_even_when_not_ignored(repo):
    (repo / ".env").write_text("SECRET=1\n")  # not in .gitignore
    (repo / "config").mkdir()
    (repo / "config" / "local.toml").write_text("token = 'x'\n")
    ws = _ws(repo, "c1", copy_files=[".env", "config/local.toml", "absent.txt"])
    assert (ws.path / ".env").read_text() == "SECRET=1\n" and (ws.path / "config" / "local.toml").exists()
    assert not ws.is_dirty() and ws.changed_files() == [] and ws.checkpoint("nothing", step=1) is None
    (ws.path / "x.py").write_text("x = 1\n")
    git(ws.path, "add", "-A")  # the agent stages everything itself
    cp = ws.checkpoint("x", step=2)
    assert _files_in(cp.sha, ws.path) == [".gitignore", "calc.py", "test_calc.py", "x.py"]
    assert "SECRET" not in ws.diff() and ws.changed_files() == ["x.py"]
    (ws.path / ".env").write_text("SECRET=2\n")
    assert not ws.is_dirty() and ws.checkpoint("env edit", step=3) is None
    ws.reset_to(ws.base_commit)
    assert (ws.path / ".env").read_text() == "SECRET=1\n" and not (ws.path / "x.py").exists()
    assert "SECRET" not in git(ws.path, "log", "-p", "--all")


def test_copy_files_must_stay_inside_the_repository(repo):
    with pytest.raises(WorkspaceError, match=r"copy_files entry '../secret'"):
        _ws(repo, "c2", copy_files=["../secret"])


def test_checkpoint_refuses_when_the_worktree_left_its_branch(ws):
    git(ws.path, "switch", "-q", "-c", "elsewhere")
    (ws.path / "a.txt").write_text("a")
    with pytest.raises(WorkspaceError, match=r"not on its branch lw/r1 .*git -C .* switch lw/r1"):
        ws.checkpoint("a", step=1)
    assert git(ws.path, "rev-parse", "lw/r1") == ws.base_commit


def test_checkpoint_without_any_git_identity(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "r"
    root.mkdir()
    ident = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@x"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    (root / "f.txt").write_text("f\n")
    subprocess.run(["git", "add", "f.txt"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True, env={**ident, "PATH": "/usr/bin:/bin"})
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for k in [*ident, "EMAIL", "GIT_CONFIG_GLOBAL"]:
        monkeypatch.delenv(k, raising=False)
    no_email = subprocess.run(["git", "config", "user.email"], cwd=root, check=False)
    assert no_email.returncode == 1  # really none configured
    ws = Workspace.create(root, "n", target_branch="main", worktrees_dir=tmp_path / "wt")
    (ws.path / "f.txt").write_text("changed\n")
    cp = ws.checkpoint("no identity", step=1)
    assert git(ws.path, "log", "-1", "--format=%an <%ae>|%cn <%ce>", cp.sha) == \
        "loopwright <loopwright@localhost>|loopwright <loopwright@localhost>"
    result = ws.squash_merge("main", "merged without identity")
    assert result.status == "merged" and (root / "f.txt").read_text() == "changed\n"
    assert git(root, "log", "-1", "--format=%cn", "main") == "loopwright"
    assert subprocess.run(["git", "config", "user.email"], cwd=root, check=False).returncode == 1  # nothing was written


# -- the user's checkout -----------------------------------------------------------------------------


def test_users_checkout_is_untouched_by_create_checkpoint_and_reset(repo):
    _make_user_dirty(repo)
    before = _user_state(repo)
    ws = _ws(repo, "u1", copy_files=[".env"])
    assert "user's unstaged edit" not in (ws.path / "calc.py").read_text()  # the run starts from the commit
    assert not (ws.path / "staged.txt").exists() and not (ws.path / "scratch.txt").exists()
    (ws.path / "calc.py").write_text("agent's version\n")
    (ws.path / "agent.txt").write_text("agent")
    cp = ws.checkpoint("agent work", step=1)
    assert _user_state(repo) == before
    ws.reset_to(ws.base_commit)
    ws.diff()
    ws.changed_files()
    assert _user_state(repo) == before
    assert (repo / "calc.py").read_text().endswith("# user's unstaged edit\n")
    assert (repo / "scratch.txt").read_text() == "user's untracked file\n"
    assert git(repo, "cat-file", "-t", cp.sha) == "commit"


# -- rollback ----------------------------------------------------------------------------------------


def test_reset_restores_files_and_cleans_but_keeps_ignored(ws):
    (ws.path / "a.txt").write_text("a")
    cp1 = ws.checkpoint("a", step=1)
    (ws.path / "a.txt").write_text("a changed")
    (ws.path / "b.txt").write_text("b")
    cp2 = ws.checkpoint("b", step=2)
    (ws.path / "stray.txt").write_text("untracked")
    (ws.path / "newdir").mkdir()
    (ws.path / "newdir" / "deep.txt").write_text("untracked too")
    (ws.path / "keep.log").write_text("ignored")
    (ws.path / "__pycache__").mkdir()
    (ws.path / "__pycache__" / "calc.pyc").write_bytes(b"\0cache")
    ws.reset_to(cp1.sha)
    assert (ws.path / "a.txt").read_text() == "a"
    assert not (ws.path / "b.txt").exists() and not (ws.path / "stray.txt").exists()
    assert not (ws.path / "newdir").exists()
    assert (ws.path / "keep.log").read_text() == "ignored" and (ws.path / "__pycache__" / "calc.pyc").exists()
    assert ws.head() == cp1.sha == git(ws.path, "rev-parse", "lw/r1") and not ws.is_dirty()
    assert ws.checkpoints() == [cp1]
    ws.reset_to(cp2.sha)  # forward again: still this run's checkpoint
    assert (ws.path / "b.txt").read_text() == "b" and ws.checkpoints() == [cp1, cp2]
    ws.reset_to(ws.base_commit)
    assert not (ws.path / "a.txt").exists() and ws.head() == ws.base_commit


def test_reset_to_a_foreign_or_unknown_commit_is_refused(repo, ws):
    (ws.path / "mine.txt").write_text("m")
    mine = ws.checkpoint("mine", step=1)
    (repo / "other.txt").write_text("o")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "main moves on")
    foreign = git(repo, "rev-parse", "main")
    with pytest.raises(WorkspaceError, match=rf"{foreign[:12]} is not a checkpoint of run r1"):
        ws.reset_to(foreign)
    with pytest.raises(WorkspaceError, match="unknown commit 'deadbeef'"):
        ws.reset_to("deadbeef")
    other = _ws(repo, "r2")
    (other.path / "theirs.txt").write_text("t")
    theirs = other.checkpoint("theirs", step=1)
    with pytest.raises(WorkspaceError, match="not a checkpoint of run r1"):
        ws.reset_to(theirs.sha)
    assert ws.head() == mine.sha and (ws.path / "mine.txt").exists()


# -- looking at the work -----------------------------------------------------------------------------


def test_diff_and_changed_files_include_untracked_and_leave_the_index_alone(ws):
    (ws.path / "calc.py").write_text("new\n")
    (ws.path / "fresh.py").write_text("fresh\n")
    (ws.path / "noise.log").write_text("ignored\n")
    (ws.path / "test_calc.py").unlink()
    index_before = git(ws.path, "ls-files", "--stage")
    assert ws.changed_files() == ["calc.py", "fresh.py", "test_calc.py"]
    diff = ws.diff()
    assert "+new" in diff and "diff --git a/fresh.py b/fresh.py" in diff and "+fresh" in diff
    assert "deleted file mode" in diff and "noise.log" not in diff
    assert git(ws.path, "ls-files", "--stage") == index_before
    assert "?? fresh.py" in git(ws.path, "status", "--porcelain")
    cp = ws.checkpoint("work", step=1)
    (ws.path / "fresh.py").write_text("fresher\n")
    since = ws.diff(against=cp.sha)
    assert "-fresh" in since and "+fresher" in since and "calc.py" not in since


# -- merging -----------------------------------------------------------------------------------------


def _fix_add(ws: Workspace) -> None:
    (ws.path / "calc.py").write_text((ws.path / "calc.py").read_text().replace("a - b", "a + b"))


def test_squash_merge_moves_the_target_by_one_commit(repo, ws):
    _fix_add(ws)
    ws.checkpoint("fix", step=1)
    (ws.path / "extra.py").write_text("x = 1\n")
    ws.checkpoint("extra", step=2)
    # the user moves on meanwhile (another file), and has unrelated uncommitted work
    (repo / "README").write_text("readme\n")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "user commit after the run started")
    (repo / "test_calc.py").write_text((repo / "test_calc.py").read_text() + "# user's unstaged edit\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "notes.txt").write_text("untracked notes\n")
    old = git(repo, "rev-parse", "main")
    result = ws.squash_merge("main", "loopwright: fix add")
    assert result.status == "merged" and result.commit == git(repo, "rev-parse", "main")
    assert git(repo, "rev-list", "--count", f"{old}..main") == "1" and git(repo, "rev-parse", "main^") == old
    assert git(repo, "log", "-1", "--format=%s", "main") == "loopwright: fix add"
    assert _files_in("main", repo) == [".gitignore", "README", "calc.py", "extra.py", "test_calc.py"]
    assert "a + b" in (repo / "calc.py").read_text() and (repo / "extra.py").read_text() == "x = 1\n"
    assert (repo / "test_calc.py").read_text().endswith("# user's unstaged edit\n")
    assert git(repo, "status", "--porcelain").splitlines() == ["A  staged.txt", " M test_calc.py", "?? notes.txt"]
    assert git(repo, "rev-parse", "--verify", "lw/r1")  # the run branch is kept


def test_squash_merge_conflict_leaves_everything(repo, ws):
    _fix_add(ws)
    ws.checkpoint("fix", step=1)
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "b + a"))
    git(repo, "commit", "-qam", "user fix")
    head, run_head = git(repo, "rev-parse", "main"), git(repo, "rev-parse", "lw/r1")
    result = ws.squash_merge("main", "m")
    assert result == type(result)("conflict", None, "conflict in calc.py (content)")
    assert git(repo, "rev-parse", "main") == head and git(repo, "status", "--porcelain") == ""
    assert "b + a" in (repo / "calc.py").read_text()
    assert git(repo, "rev-parse", "lw/r1") == run_head and ws.head() == run_head


def test_squash_merge_refuses_to_overwrite_uncommitted_overlap(repo, ws):
    (ws.path / "calc.py").write_text("agent version\n")
    (ws.path / "other.py").write_text("agent file\n")
    ws.checkpoint("rewrite", step=1)
    (repo / "calc.py").write_text("user's uncommitted version\n")
    head = git(repo, "rev-parse", "main")
    result = ws.squash_merge("main", "m")
    assert result.status == "conflict" and result.commit is None
    assert result.detail.startswith("your uncommitted changes to calc.py overlap the run's changes")
    assert git(repo, "rev-parse", "main") == head
    assert (repo / "calc.py").read_text() == "user's uncommitted version\n" and not (repo / "other.py").exists()
    assert git(repo, "diff", "--name-only") == "calc.py" and git(repo, "diff", "--cached") == ""


def test_squash_merge_ignores_a_touched_but_unchanged_file(repo, ws):
    _fix_add(ws)
    ws.checkpoint("fix", step=1)
    os.utime(repo / "calc.py", (1e9, 1e9))  # an editor saved it unchanged: other mtime, same bytes
    assert ws.squash_merge("main", "m").status == "merged" and "a + b" in (repo / "calc.py").read_text()
    assert git(repo, "status", "--porcelain") == ""


def test_squash_merge_refuses_to_overwrite_an_untracked_file(repo, ws):
    (ws.path / "new.py").write_text("agent\n")
    ws.checkpoint("new", step=1)
    (repo / "new.py").write_text("user's own, untracked\n")
    result = ws.squash_merge("main", "m")
    assert result.status == "conflict" and "new.py" in result.detail
    assert (repo / "new.py").read_text() == "user's own, untracked\n"
    assert git(repo, "rev-parse", "main") == ws.base_commit


def test_squash_merge_with_nothing_to_merge(repo, ws):
    result = ws.squash_merge("main", "m")
    assert result.status == "nothing" and result.commit is None and "changed nothing" in result.detail
    _fix_add(ws)
    ws.checkpoint("fix", step=1)
    assert ws.squash_merge("main", "first").status == "merged"
    head = git(repo, "rev-parse", "main")
    again = ws.squash_merge("main", "again")
    assert again.status == "nothing" and "already has" in again.detail and git(repo, "rev-parse", "main") == head


class _LockThatMust:
    """A git lock that records when it is taken, and can do something first (another merge moving main)."""

    def __init__(self, before=None):
        self.taken, self.before = 0, before

    def __enter__(self):
        self.taken += 1
        if self.before is not None:
            self.before()

    def __exit__(self, *exc):
        return False


def test_a_conflict_or_nothing_to_merge_is_decided_without_the_lock(repo, ws):
    other = _ws(repo, "r2")
    (other.path / "calc.py").write_text((other.path / "calc.py").read_text().replace("a - b", "b - a"))
    other.checkpoint("the same line", step=1)
    _fix_add(ws)
    ws.checkpoint("fix", step=1)
    lock = _LockThatMust()
    assert ws.squash_merge("main", "first", git_lock=lock).status == "merged" and lock.taken == 1
    assert ws.squash_merge("main", "again", git_lock=lock).status == "nothing" and lock.taken == 1
    assert other.squash_merge("main", "clash", git_lock=lock).status == "conflict" and lock.taken == 1


def test_a_target_moved_by_another_merge_before_the_lock_is_merged_onto(repo, ws):
    _fix_add(ws)
    ws.checkpoint("fix", step=1)

    def someone_merges():
        (repo / "notes.txt").write_text("merged by another run\n")
        git(repo, "add", "notes.txt")
        git(repo, "commit", "-qm", "another merge")

    lock = _LockThatMust(before=someone_merges)
    result = ws.squash_merge("main", "mine", git_lock=lock)
    assert result.status == "merged" and lock.taken == 1
    assert git(repo, "log", "--format=%s", "-2", "main").splitlines() == ["mine", "another merge"]
    assert (repo / "notes.txt").exists() and "a + b" in (repo / "calc.py").read_text()
    assert git(repo, "status", "--porcelain") == ""


def test_working_a_merge_out_reads_both_branches_at_once_and_makes_one_stand_in(repo, ws, tmp_path):
    """Before the lock: one rev-parse for the run, the base and the target; on git < 2.40 the run's and the
    target's trees stand in as children of the base commit (their only common ancestor), none for the base."""
    _fix_add(ws)
    ws.checkpoint("fix", step=1)
    (repo / "README").write_text("readme\n")  # the target moved on since the run started
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "user commit")
    trace = tmp_path / "trace"
    os.environ["GIT_TRACE"] = str(trace)
    try:
        plan = ws.plan_squash("main", "m")
    finally:
        del os.environ["GIT_TRACE"]
    ran = [ln.split("built-in: git ", 1)[1].split()[0] for ln in trace.read_text().splitlines()
           if "built-in: git " in ln]
    stand_ins = [] if has_merge_base_option(git_module.Git(repo)) else ["commit-tree", "commit-tree"]
    assert ran == ["rev-parse", *stand_ins, "merge-tree", "commit-tree"]
    assert plan.land().status == "merged"
    assert _files_in("main", repo) == [".gitignore", "README", "calc.py", "test_calc.py"]
    assert "a + b" in (repo / "calc.py").read_text()
    with pytest.raises(WorkspaceError, match=r"no branch 'nope' to merge into"):
        ws.plan_squash("nope", "m")


def test_squash_merge_of_a_deleted_run_branch_is_one_line(repo, ws):
    (ws.path / "a.txt").write_text("a")
    ws.checkpoint("a", step=1)
    git(ws.path, "switch", "-q", "--detach")
    git(repo, "branch", "-D", "lw/r1")
    with pytest.raises(WorkspaceError, match=r"^the run branch lw/r1 no longer exists; there is nothing to merge$"):
        ws.squash_merge("main", "m")


def test_squash_merge_into_a_branch_not_checked_out(repo, ws):
    git(repo, "branch", "release")
    (ws.path / "r.txt").write_text("r")
    ws.checkpoint("r", step=1)
    result = ws.squash_merge("release", "m")
    assert result.status == "merged" and git(repo, "rev-parse", "release^") == git(repo, "rev-parse", "main")
    assert "r.txt" in _files_in("release", repo) and not (repo / "r.txt").exists()
    with pytest.raises(WorkspaceError, match="no branch 'gone' to merge into"):
        ws.squash_merge("gone", "m")


# -- removal -----------------------------------------------------------------------------------------


def test_remove_frees_bytes_and_keeps_or_deletes_the_branch(repo):
    keep = _ws(repo, "k")
    (keep.path / "big.bin").write_bytes(b"x" * 100_000)
    freed = keep.remove(delete_branch=False)
    assert freed >= 100_000 + len((repo / "calc.py").read_bytes())
    assert not keep.path.exists() and git(repo, "rev-parse", "--verify", "lw/k")
    assert str(keep.path) not in git(repo, "worktree", "list")
    drop = _ws(repo, "d")
    assert drop.remove(delete_branch=True) > 0
    assert git(repo, "branch", "--list", "lw/d") == ""
    assert drop.remove(delete_branch=True) == 0  # already gone: nothing to do, no error


def test_a_missing_worktree_is_one_line(repo, ws):
    subprocess.run(["rm", "-rf", str(ws.path)], check=True)
    gone = Workspace.open(repo, "r1", ws.path, ws.branch, ws.base_commit)
    with pytest.raises(WorkspaceError) as e:
        gone.checkpoint("x", step=1)
    assert "worktree of run r1 is missing" in str(e.value) and "\n" not in str(e.value)
    assert gone.checkpoints() == []  # read from the branch, which still exists


def test_clear_stale_lock_after_a_killed_checkpoint(repo, ws):
    admin = Path(git(ws.path, "rev-parse", "--path-format=absolute", "--git-dir"))
    (admin / "index.lock").write_text("")
    (ws.path / "x.txt").write_text("x")
    with pytest.raises(WorkspaceError, match="index.lock"):
        ws.checkpoint("blocked", step=1)
    assert ws.clear_stale_lock() is True and ws.clear_stale_lock() is False
    assert ws.checkpoint("unblocked", step=1) is not None


def test_many_runs_merging_at_once_from_threads_all_land(repo):
    """The fleet's case: runs finish together and merge from worker threads; only the step from reading the
    target's head to moving it is under the lock, so the checkout follows and no merge is lost."""
    from concurrent.futures import ThreadPoolExecutor

    from loopwright.runtime.merging import GIT_LOCK, squash_merge

    spaces = [Workspace.create(repo, f"m{i}", target_branch="main", worktrees_dir=repo.parent / "wt",
                               git_lock=GIT_LOCK) for i in range(8)]
    for i, w in enumerate(spaces):
        (w.path / f"part{i}.txt").write_text(f"{i}\n")
        w.checkpoint(f"part {i}", step=1)
    old = git(repo, "rev-parse", "main")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda w: squash_merge(w, "main", f"merge {w.run_id}"), spaces))
    assert [r.status for r in results] == ["merged"] * 8
    assert git(repo, "rev-list", "--count", f"{old}..main") == "8"
    assert all((repo / f"part{i}.txt").read_text() == f"{i}\n" for i in range(8))  # the user's checkout followed
    assert git(repo, "status", "--porcelain") == ""


def _runs_with_work(repo: Path, names: list[str]) -> list[Workspace]:
    from loopwright.runtime.merging import GIT_LOCK

    spaces = [Workspace.create(repo, name, target_branch="main", worktrees_dir=repo.parent / "wt", git_lock=GIT_LOCK)
              for name in names]
    for w in spaces:
        (w.path / f"{w.run_id}.txt").write_text(f"{w.run_id}\n")
        w.checkpoint(w.run_id, step=1)
    return spaces


def test_runs_waiting_for_the_git_lock_land_together_in_one_branch_move(repo):
    """A merge train: the runs waiting when the lock frees are squashed one onto the other and main moves once."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from loopwright.runtime.merging import GIT_LOCK, TRAIN, squash_merge

    spaces = _runs_with_work(repo, [f"t{i}" for i in range(6)])
    old = git(repo, "rev-parse", "main")
    moves_before = len(git(repo, "reflog", "show", "--format=%H", "refs/heads/main").splitlines())
    with ThreadPoolExecutor(6) as pool, GIT_LOCK:  # held here until all six wait in line
        futures = [pool.submit(squash_merge, w, "main", f"merge {w.run_id}") for w in spaces]
        deadline = time.monotonic() + 30
        while sum(len(line) for line in TRAIN._waiting.values()) < 6:
            assert time.monotonic() < deadline, "the six merges never lined up"
            time.sleep(0.01)
    results = [f.result(timeout=60) for f in futures]
    assert [r.status for r in results] == ["merged"] * 6
    chain = git(repo, "rev-list", "--reverse", f"{old}..main").splitlines()
    assert len(chain) == 6 and sorted(chain) == sorted(r.commit for r in results)
    moves = git(repo, "reflog", "show", "--format=%H", "refs/heads/main").splitlines()
    assert len(moves) == moves_before + 1  # one move for the six
    assert all((repo / f"t{i}.txt").read_text() == f"t{i}\n" for i in range(6))  # the user's checkout followed
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("order", ["first-first", "last-first"])
def test_a_kill_before_a_train_moves_the_branch_leaves_intents_each_run_recovers_from(repo, monkeypatch, order):
    """Killed after each run of a train recorded its intent and before main moved: whichever order the runs are
    recovered in, finish_merge completes what it can and the rest merge again, each change landing once."""
    from loopwright.runtime.merging import GIT_LOCK
    from loopwright.workspaces.git import land_together

    spaces = _runs_with_work(repo, ["k0", "k1", "k2"])
    old = git(repo, "rev-parse", "main")
    intents: dict[str, tuple[str, str]] = {}

    class Killed(BaseException):
        pass

    def killed(*_args):
        raise Killed

    plans = [w.plan_squash("main", f"merge {w.run_id}") for w in spaces]
    monkeypatch.setattr(Workspace, "_move_target", killed)
    with pytest.raises(Killed), GIT_LOCK:
        land_together([(p, lambda onto, commit, run=w.run_id: intents.__setitem__(run, (onto, commit)))
                       for p, w in zip(plans, spaces, strict=True)])
    monkeypatch.undo()
    assert git(repo, "rev-parse", "main") == old and intents["k0"][0] == old and intents["k1"][0] == intents["k0"][1]
    finished = []
    for w in spaces if order == "first-first" else reversed(spaces):
        done = w.finish_merge("main", *intents[w.run_id], git_lock=GIT_LOCK)
        finished.append(done is not None)
        if done is None:  # its intent names a head main never had: the merge never happened
            done = w.squash_merge("main", f"merge {w.run_id} again", git_lock=GIT_LOCK)
        assert done.status == "merged", done
    # in order, each intent is finished as recorded; last first, none is (each names a head main is not at)
    assert finished == ([True] * 3 if order == "first-first" else [False] * 3)
    assert git(repo, "rev-list", "--count", f"{old}..main") == "3"
    assert all((repo / f"k{i}.txt").read_text() == f"k{i}\n" for i in range(3))

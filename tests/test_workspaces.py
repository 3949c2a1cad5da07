"""Git workspaces in real repositories: worktrees, checkpoints, rollback, squash merge, removal."""

from __future__ import annotations

import os
import subprocess

import pytest
from support import git

from loopwright.workspaces.git import Workspace, WorkspaceError, current_branch, repo_root


def _trailers(ws: Workspace) -> list[str]:
    out = git(ws.path, "log", "--format=%(trailers:only,unfold)", f"{ws.base_commit}..HEAD")
    return [t for t in out.splitlines() if t]


@pytest.fixture
def ws(repo) -> Workspace:
    return Workspace.create(repo, "r1", target_branch="main", worktrees_dir=repo.parent / "worktrees")


def test_not_a_repo_and_no_commits(tmp_path):
    with pytest.raises(WorkspaceError, match=r"not a git repository: .* \(run `git init` first\)"):
        repo_root(tmp_path)
    git(tmp_path, "init", "-q", "-b", "main")
    with pytest.raises(WorkspaceError, match="no commits yet"):
        current_branch(tmp_path)
    with pytest.raises(WorkspaceError, match="no commits yet"):
        Workspace.create(tmp_path, "r", target_branch="main", worktrees_dir=tmp_path / "wt")


def test_detached_head_and_unknown_branch(repo):
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(WorkspaceError, match="detached"):
        current_branch(repo)
    with pytest.raises(WorkspaceError, match="no branch 'nope'"):
        Workspace.create(repo, "r", target_branch="nope", worktrees_dir=repo / "wt")


def test_create_makes_worktree_and_branch(ws, repo):
    assert ws.path.is_dir() and (ws.path / "calc.py").exists()
    assert git(ws.path, "rev-parse", "--abbrev-ref", "HEAD") == "lw/r1"
    assert ws.base_commit == git(repo, "rev-parse", "main")


def test_checkpoint_commits_with_trailers(ws):
    (ws.path / "calc.py").write_text("changed\n")
    (ws.path / "new.py").write_text("untracked\n")
    (ws.path / "debug.log").write_text("ignored\n")
    cp = ws.checkpoint("step one", step=1)
    assert cp is not None and cp.sha == ws.head()
    files = git(ws.path, "show", "--name-only", "--format=", cp.sha).splitlines()
    assert sorted(files) == ["calc.py", "new.py"]
    assert _trailers(ws) == ["Loopwright-Run: r1", "Loopwright-Step: 1"]
    assert ws.checkpoint("nothing", step=2) is None
    assert [(c.step, c.message) for c in ws.checkpoints()] == [(1, "step one")]


def test_copied_files_are_never_committed(repo):
    (repo / ".env").write_text("SECRET=1\n")  # not ignored
    ws = Workspace.create(repo, "r2", target_branch="main", worktrees_dir=repo / "wt", copy_files=[".env"])
    assert (ws.path / ".env").read_text() == "SECRET=1\n"
    assert not ws.is_dirty()
    (ws.path / "x.py").write_text("x")
    cp = ws.checkpoint("x", step=1)
    assert ".env" not in git(ws.path, "show", "--name-only", "--format=", cp.sha)
    ws.reset_to(ws.base_commit)
    assert (ws.path / ".env").exists() and not (ws.path / "x.py").exists()


def test_users_checkout_is_never_touched(repo, ws):
    (repo / "calc.py").write_text("user's unstaged edit\n")
    (repo / "staged.txt").write_text("staged")
    git(repo, "add", "staged.txt")
    before = git(repo, "status", "--porcelain")
    (ws.path / "agent.txt").write_text("agent")
    ws.checkpoint("agent work", step=1)
    ws.reset_to(ws.base_commit)
    assert git(repo, "status", "--porcelain") == before
    assert (repo / "calc.py").read_text() == "user's unstaged edit\n"
    assert git(repo, "rev-parse", "main") == ws.base_commit


def test_reset_restores_and_cleans_but_keeps_ignored(ws):
    (ws.path / "a.txt").write_text("a")
    cp1 = ws.checkpoint("a", step=1)
    (ws.path / "a.txt").write_text("a changed")
    (ws.path / "b.txt").write_text("b")
    ws.checkpoint("b", step=2)
    (ws.path / "stray.txt").write_text("untracked")
    (ws.path / "keep.log").write_text("ignored")
    ws.reset_to(cp1.sha)
    assert (ws.path / "a.txt").read_text() == "a"
    assert not (ws.path / "b.txt").exists() and not (ws.path / "stray.txt").exists()
    assert (ws.path / "keep.log").exists()
    assert ws.head() == cp1.sha and not ws.is_dirty()


def test_reset_to_a_foreign_commit_is_refused(repo, ws):
    (repo / "other.txt").write_text("o")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "main moves on")
    with pytest.raises(WorkspaceError, match="not a checkpoint of run r1"):
        ws.reset_to(git(repo, "rev-parse", "main"))


def test_squash_merge_moves_target_by_one_commit(repo, ws):
    (repo / "notes.txt").write_text("user notes, uncommitted\n")
    (ws.path / "calc.py").write_text((ws.path / "calc.py").read_text().replace("a - b", "a + b"))
    ws.checkpoint("fix", step=1)
    (ws.path / "extra.py").write_text("x = 1\n")
    ws.checkpoint("extra", step=2)
    old = git(repo, "rev-parse", "main")
    result = ws.squash_merge("main", "loopwright: fix add")
    assert result.status == "merged"
    assert git(repo, "rev-parse", "main^") == old
    assert git(repo, "log", "-1", "--format=%s", "main") == "loopwright: fix add"
    assert "a + b" in (repo / "calc.py").read_text() and (repo / "extra.py").exists()
    assert git(repo, "status", "--porcelain") == "?? notes.txt"


def test_squash_merge_conflict_leaves_everything(repo, ws):
    (ws.path / "calc.py").write_text((ws.path / "calc.py").read_text().replace("a - b", "a + b"))
    ws.checkpoint("fix", step=1)
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "b + a"))
    git(repo, "commit", "-qam", "user fix")
    head = git(repo, "rev-parse", "main")
    result = ws.squash_merge("main", "m")
    assert result.status == "conflict" and "calc.py" in result.detail
    assert git(repo, "rev-parse", "main") == head and git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--verify", "lw/r1")


def test_squash_merge_refuses_to_overwrite_uncommitted_overlap(repo, ws):
    (ws.path / "calc.py").write_text("agent version\n")
    ws.checkpoint("rewrite", step=1)
    (repo / "calc.py").write_text("user's uncommitted version\n")
    head = git(repo, "rev-parse", "main")
    result = ws.squash_merge("main", "m")
    assert result.status == "conflict" and "calc.py" in result.detail and "uncommitted" in result.detail
    assert git(repo, "rev-parse", "main") == head
    assert (repo / "calc.py").read_text() == "user's uncommitted version\n"


def test_squash_merge_with_nothing_to_merge(ws):
    assert ws.squash_merge("main", "m").status == "nothing"


def test_merge_into_a_branch_not_checked_out(repo, ws):
    git(repo, "branch", "release")
    (ws.path / "r.txt").write_text("r")
    ws.checkpoint("r", step=1)
    assert ws.squash_merge("release", "m").status == "merged"
    assert "r.txt" in git(repo, "ls-tree", "--name-only", "release") and not (repo / "r.txt").exists()


def test_setup_command_runs_and_failure_is_reported(repo):
    ws = Workspace.create(repo, "s1", target_branch="main", worktrees_dir=repo / "wt", setup_command="echo ok > setup.out")
    assert (ws.path / "setup.out").read_text() == "ok\n"
    with pytest.raises(WorkspaceError, match=r"setup command failed \(exit 3\).*boom"):
        Workspace.create(repo, "s2", target_branch="main", worktrees_dir=repo / "wt",
                         setup_command="echo boom; exit 3")


def test_remove_frees_bytes_and_handles_the_branch(repo):
    keep = Workspace.create(repo, "k", target_branch="main", worktrees_dir=repo / "wt")
    (keep.path / "big.bin").write_bytes(b"x" * 100_000)
    assert keep.remove(delete_branch=False) >= 100_000
    assert not keep.path.exists() and git(repo, "rev-parse", "--verify", "lw/k")
    drop = Workspace.create(repo, "d", target_branch="main", worktrees_dir=repo / "wt")
    drop.remove(delete_branch=True)
    with pytest.raises(subprocess.CalledProcessError):
        git(repo, "rev-parse", "--verify", "lw/d")


def test_checkpoint_without_a_git_identity(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "r"
    root.mkdir()
    env = {"GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x", "GIT_COMMITTER_EMAIL": "x@x"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=root, check=True,
                   env={**os.environ, **env})
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for k in env:
        monkeypatch.delenv(k, raising=False)
    ws = Workspace.create(root, "n", target_branch="main", worktrees_dir=root / "wt")
    (ws.path / "f.txt").write_text("f")
    cp = ws.checkpoint("no identity", step=1)
    assert cp is not None
    assert git(ws.path, "log", "-1", "--format=%an <%ae>") == "loopwright <loopwright@localhost>"
    assert ws.squash_merge("main", "merged without identity").status == "merged"


def test_diff_and_changed_files(ws):
    (ws.path / "calc.py").write_text("new\n")
    (ws.path / "fresh.py").write_text("fresh\n")
    assert sorted(ws.changed_files()) == ["calc.py", "fresh.py"]
    diff = ws.diff()
    assert "+new" in diff and "+fresh" in diff

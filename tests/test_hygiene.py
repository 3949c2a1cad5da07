"""Worktree hygiene under the daemon: finished worktrees removed after the delay; the free-disk floor."""

from __future__ import annotations

from pathlib import Path

from support import FINISH, FIX_ADD, git, until, write_script
from test_daemon import post, wait_until_done


def test_finished_worktrees_are_removed_after_the_delay(repo, cli, tmp_path, daemon, monkeypatch):  # noqa: F811
    monkeypatch.setenv("LOOPWRIGHT_WORKSPACE__REMOVE_AFTER_SECONDS", "1")
    cli(repo, "init")
    task = post(cli, repo, tmp_path, "a")
    d = daemon()
    store = wait_until_done(repo, 1)
    run = store.runs(task_id=task)[0]
    assert store.task(task).status == "succeeded"
    log = tmp_path / "daemon.log"
    until(lambda: f"removed the worktree of run {run.id}" in log.read_text(), "the worktree to be removed", timeout=20)
    assert not Path(run.worktree).exists()
    assert run.branch not in git(repo, "branch", "--list")  # merged, and gc_keep_branches = unmerged
    assert "a.txt" in git(repo, "ls-tree", "--name-only", "main")  # the work itself is kept
    d.stop()


def test_no_new_run_starts_below_the_free_disk_floor(repo, cli, tmp_path, daemon, monkeypatch):  # noqa: F811
    cli(repo, "init")
    task = post(cli, repo, tmp_path, "b")
    monkeypatch.setenv("LOOPWRIGHT_WORKSPACE__MIN_FREE_DISK_MB", "1000000000000")
    d = daemon()
    log = tmp_path / "daemon.log"
    until(lambda: "below the floor" in log.read_text(), "the daemon to say the disk floor holds it")
    code, out, _ = cli(repo, "status")
    assert code == 0 and "held: free disk" in out and "min_free_disk_mb" in out
    assert cli.json(repo, "tasks")[0]["status"] == "queued"
    d.stop()
    monkeypatch.delenv("LOOPWRIGHT_WORKSPACE__MIN_FREE_DISK_MB")
    d = daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded"
    d.stop()


def test_gc_dry_run_reports_the_bytes_gc_then_frees(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    run = cli.json(repo, "run", "fix", "--check", "true", "--script", script)
    assert run["status"] == "succeeded"
    (Path(run["worktree"]) / "build.bin").write_bytes(b"x" * 2_500_000)  # what a build leaves behind
    dry = cli.json(repo, "gc", "--dry-run")
    assert dry["dry_run"] and [r["run"] for r in dry["would_remove"]] == [run["run"]]
    assert dry["bytes_to_free"] > 2_500_000 and "bytes_freed" not in dry
    code, out, _ = cli(repo, "gc", "--dry-run")
    assert code == 0 and "would be freed" in out and f"{dry['bytes_to_free'] / 1e6:.1f} MB" in out  # text = JSON
    assert Path(run["worktree"]).exists()  # a dry run removes nothing
    done = cli.json(repo, "gc")
    assert done["bytes_freed"] == dry["bytes_to_free"] and not Path(run["worktree"]).exists()


def test_gc_removes_the_branch_of_a_run_that_had_nothing_to_merge(repo, cli, tmp_path):
    """gc_keep_branches = unmerged keeps a branch whose work the target lacks; a branch with no commit of its own
    (its check passed with nothing to merge, e.g. every step of it lost to kills) holds nothing to keep."""
    kept = cli.json(repo, "run", "fix", "--script", write_script(tmp_path / "k.json", [FIX_ADD, FINISH]))
    assert kept["status"] == "needs_review"  # no check: kept for review, its branch holds the fix
    empty = cli.json(repo, "run", "nothing", "--check", "true", "--script", write_script(tmp_path / "e.json", [FINISH]))
    assert empty["status"] == "succeeded" and "no changes to merge" in cli.json(repo, "show", empty["run"])["reason"]
    assert cli(repo, "gc")[0] == 0
    branches = git(repo, "branch", "--list", "lw/*")
    assert f"lw/{empty['run']}" not in branches and f"lw/{kept['run']}" in branches

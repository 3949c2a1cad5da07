"""Loop until done: fresh attempts in the same worktree until the command passes, within caps."""

from __future__ import annotations

import asyncio
import subprocess

from support import call, turn, write_script

from loopwright.runtime.project import open_project
from loopwright.runtime.runner import Runner

UNTIL = "test \"$(cat n.txt)\" -ge 3"


def _run_posted(repo, task_id: int):
    project = open_project(repo)
    assert project.store.claim_task(task_id)
    return asyncio.run(Runner(project).run_task(project.store.task(task_id))), project.store


def _write(n: int, **kw) -> dict:
    return turn(call("write_file", path="n.txt", content=str(n)), **kw)


def test_attempts_repeat_with_fresh_context_until_the_command_passes(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [
        _write(1), turn(call("scratchpad", action="append", text="tried 1")), turn(call("finish", summary="done!")),
        _write(2, expect="attempt 2 of at most 5"), turn(call("finish", summary="surely done")),
        _write(3, expect="tried 1"), turn(call("finish", summary="done")),
    ])
    task = cli.json(repo, "post", "count to three", "--until", UNTIL, "--max-attempts", "5", "--script", script)["task"]
    result, store = _run_posted(repo, task)
    assert result.run.status == "succeeded" and store.task(task).status == "succeeded"
    runs = store.runs(task_id=task)
    assert [r.status for r in runs] == ["failed", "failed", "succeeded"]
    assert len({r.worktree for r in runs}) == 1  # one worktree, the work carried from attempt to attempt
    assert all("failed (exit 1)" in r.reason for r in runs[:2])
    second_start = store.conversation(runs[1].id)[0].text
    assert "Attempt 1 (run" in second_start and "tried 1" in second_start
    assert (repo / "n.txt").read_text() == "3"  # merged once the command passed
    trailers = subprocess.run(["git", "log", "--format=%(trailers:key=Loopwright-Run,valueonly)", runs[0].branch],
                              cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    assert set(trailers) == {r.id for r in runs}  # each attempt's checkpoints name its own run


def test_the_agents_word_does_not_end_the_loop_and_the_cap_does(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [{"text": "All done, it works!"}, {"text": "Definitely done now."}])
    task = cli.json(repo, "post", "count", "--until", UNTIL, "--max-attempts", "2", "--script", script)["task"]
    result, store = _run_posted(repo, task)
    assert store.task(task).status == "failed"
    assert "stopped after 2 attempt(s)" in store.task(task).reason and UNTIL in store.task(task).reason
    assert len(store.runs(task_id=task)) == 2


def test_the_task_budget_caps_all_attempts_together(repo, cli, tmp_path):
    (repo / "loopwright.toml").write_text("[models.priced]\ninput_usd_per_mtok = 10000\noutput_usd_per_mtok = 0\n")
    script = write_script(tmp_path / "s.json", [_write(1), turn(call("finish", summary="x")), _write(2)])
    task = cli.json(repo, "post", "count", "--until", UNTIL, "--budget-usd", "2.5", "--model", "priced",
                    "--script", script)["task"]
    result, store = _run_posted(repo, task)
    runs = store.runs(task_id=task)
    assert [r.status for r in runs] == ["failed", "budget_exceeded"]
    assert store.task(task).status == "budget_exceeded" and "task budget spent" in store.task(task).reason
    assert sum(r.cost_usd for r in runs) <= 3.0 + 1e-9


def test_until_usage_errors(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [_write(1)])
    code, _, err = cli(repo, "post", "x", "--max-attempts", "3", "--script", script)
    assert code == 2 and "--max-attempts goes with --until" in err
    code, _, err = cli(repo, "post", "x", "--until", "true", "--check", "true", "--script", script)
    assert code == 2 and "not both" in err

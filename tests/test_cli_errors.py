"""Everything a user types can be wrong: one line on stderr, a hint, exit 2, never a traceback."""

from __future__ import annotations

import os
import signal
import sys

import pytest
from support import FINISH, FIX_ADD, call, git, loopwright_subprocess, turn, until, write_script


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert err.startswith("loopwright: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_not_a_git_repository(tmp_path, cli):
    err = _one_line_error(*cli(tmp_path, "init")[::2])
    assert "not a git repository" in err and "git init" in err
    err = _one_line_error(*cli(tmp_path, "run", "do it")[::2])
    assert "git init" in err


def test_repository_without_commits(tmp_path, cli):
    git(tmp_path, "init", "-q", "-b", "main")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    err = _one_line_error(*cli(tmp_path, "run", "do it", "--script", script)[::2])
    assert "no commits" in err
    for target in ((), ("--target", "main")):
        err = _one_line_error(*cli(tmp_path, "post", "do it", "--script", script, *target)[::2])
        assert "no commits" in err and "git commit" in err
    assert cli.json(tmp_path, "tasks") == []  # nothing queued, nothing left failed


def test_post_while_a_worktree_is_being_added(repo, cli, tmp_path):
    """`git worktree add` (a daemon starting a run) holds a placeholder HEAD for a moment; a post then must not
    fail with "bad object worktrees/<id>/HEAD" (seen in the fleet benchmark)."""
    admin = repo / ".git" / "worktrees" / "being-added"
    admin.mkdir(parents=True)
    (admin / "HEAD").write_text("0" * 40 + "\n")
    (admin / "commondir").write_text("../..\n")
    (admin / "gitdir").write_text(str(tmp_path / "elsewhere" / ".git") + "\n")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    code, out, err = cli(repo, "post", "do it", "--script", script)
    assert code == 0 and "queued" in out, err


def test_init_twice_and_exclude(repo, cli):
    code, out, _ = cli(repo, "init")
    assert code == 0 and "initialised" in out
    code, out, _ = cli(repo, "init")
    assert code == 0 and "already initialised" in out
    exclude = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert exclude.count("/.loopwright/*") == 1 and "/.loopwright/" not in exclude
    assert git(repo, "status", "--porcelain") == ""
    assert "# provider" in (repo / ".loopwright" / "config.toml").read_text()


def test_commands_before_init(repo, cli):
    err = _one_line_error(*cli(repo, "runs")[::2])
    assert "loopwright init" in err


def test_invalid_config_value(repo, cli, monkeypatch):
    cli(repo, "init")
    (repo / ".loopwright" / "config.toml").write_text("[budget]\nmax_usd = -1\n")
    err = _one_line_error(*cli(repo, "run", "do it")[::2])
    assert "budget.max_usd = -1" in err and "config.toml" in err and "greater than 0" in err


def test_missing_api_key(repo, cli):
    err = _one_line_error(*cli(repo, "run", "do it")[::2])
    assert "ANTHROPIC_API_KEY is not set" in err and "--base-url" in err
    err = _one_line_error(*cli(repo, "run", "do it", "--provider", "openai", "--model", "gpt-5")[::2])
    assert "OPENAI_API_KEY" in err


def test_unknown_model(repo, cli, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-not-a-real-key")
    err = _one_line_error(*cli(repo, "run", "do it", "--model", "claude-nonexistent")[::2])
    assert "unknown model 'claude-nonexistent'" in err


def test_missing_or_bad_script(repo, cli, tmp_path):
    err = _one_line_error(*cli(repo, "run", "do it", "--script", tmp_path / "nope.json")[::2])
    assert "script file not found" in err
    (tmp_path / "bad.json").write_text("{")
    err = _one_line_error(*cli(repo, "run", "do it", "--script", tmp_path / "bad.json")[::2])
    assert "not valid JSON" in err


@pytest.mark.parametrize("entry, needle", [
    ({"text": "x", "tool_calls": [{"name": "read_file", "args": {"path": "calc.py"}}]},
     "turns.0.tool_calls.0: unknown key 'args' (allowed: name, arguments, raw_arguments)"),
    ({"txt": "x"}, "turns.0: unknown key 'txt' (allowed: text, tool_calls"),
    ({"tool_calls": [{"arguments": {}}]}, "turns.0.tool_calls.0.name: Field required"),
    ({"fault": "429", "retry": 1}, "turns.0: unknown key 'retry' (allowed: fault, retry_after, reset_after, delay)"),
    ({"fault": "418"}, "turns.0.fault: Input should be '429'"),
])
def test_a_script_mistake_is_reported_against_the_kind_of_entry_it_was_meant_as(repo, cli, tmp_path, entry, needle):
    script = write_script(tmp_path / "bad.json", [entry])
    err = _one_line_error(*cli(repo, "run", "do it", "--script", script)[::2])
    assert f"bad.json: {needle}" in err


@pytest.mark.parametrize("args, needle", [
    (["run"], "goal"),
    (["rollback", "abc"], "--to"),
    (["frobnicate"], "invalid choice"),
    (["run", "x", "--provider", "gemini"], "invalid choice"),
])
def test_usage_errors_are_one_line(repo, cli, args, needle):
    err = _one_line_error(*cli(repo, *args)[::2])
    assert needle in err


def test_unknown_run(repo, cli):
    cli(repo, "init")
    err = _one_line_error(*cli(repo, "show", "deadbeef")[::2])
    assert "no run 'deadbeef'" in err


def test_resume_of_a_finished_run_is_refused(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    run = cli.json(repo, "run", "fix", "--check", "true", "--script", script)["run"]
    err = _one_line_error(*cli(repo, "resume", run)[::2])
    assert "succeeded" in err and "nothing to resume" in err


def test_resume_after_gc_says_the_worktree_is_gone(repo, cli, tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [turn(call("write_file", path="a.txt", content="a"))])
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "1")
    run = cli.json(repo, "run", "write", "--script", script)
    assert run["status"] == "budget_exceeded"
    cli.json(repo, "gc")
    err = _one_line_error(*cli(repo, "resume", run["run"])[::2])
    assert "worktree" in err and "gone" in err
    assert cli.json(repo, "runs")[0]["status"] == "budget_exceeded"  # the refusal changed nothing


def test_a_reader_that_stops_early_ends_the_command_quietly(project, repo):
    """`loopwright runs | head -1`: no message, no crash log, exit 141 (as `git log | head` ends)."""
    task = project.store.create_task("a task with many runs")
    with project.store.transaction():
        for i in range(3000):  # ~300 kB of rows: far more than a pipe holds, so the write after the close fails
            project.store.create_run(task.id, provider="scripted", model="script", worktree=str(repo / f"w{i}"),
                                     branch=f"lw/{i}", base_commit="0" * 40, target_branch="main")
    proc = loopwright_subprocess(repo, "runs")
    assert "a task with many runs" in proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    assert (proc.wait(timeout=60), proc.stderr.read()) == (141, "")
    assert not (project.log_dir / "crash.log").exists()


@pytest.mark.parametrize("command", [["pause", "99"], ["kill", "99"], ["resume", "99"], ["cancel", "99"]])
def test_an_unknown_task_number_points_at_the_task_list(repo, cli, command):
    cli(repo, "init")
    err = _one_line_error(*cli(repo, *command)[::2])
    assert "no task 99" in err and "`loopwright tasks`" in err and "loopwright runs" not in err


def test_an_unknown_run_id_points_at_the_run_list(repo, cli):
    cli(repo, "init")
    err = _one_line_error(*cli(repo, "pause", "abcdef12")[::2])
    assert "no run 'abcdef12'" in err and "`loopwright runs`" in err


def test_tasks_cuts_a_long_reason_between_words(project, repo, cli, monkeypatch):
    reason = ("dependency task 3 failed: its check needs a linter that is not installed, e.g. ruff or flake8; "
              "install one and post the task again")
    task = project.store.create_task("lint the package")
    project.store.set_task_status(task.id, "failed", reason=reason)
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli(repo, "tasks")
    line = out.rstrip("\n")
    shown = line[line.index("  (") + 3:-1]
    assert code == 0 and len(line) <= 100 and shown.endswith("…"), line
    cut = shown[:-1]
    assert reason.startswith(cut) and reason[len(cut)] == " ", shown  # whole words only ("e.g." is one)
    monkeypatch.setenv("COLUMNS", "250")  # wide enough: the whole reason
    assert cli(repo, "tasks")[1].rstrip("\n").endswith(f"  ({reason})")


def test_rollback_steps_on_a_run_without_checkpoints(repo, cli, tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [turn(call("shell", command="true"))])  # changes nothing
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "1")
    run = cli.json(repo, "run", "look around", "--script", script)
    assert run["status"] == "budget_exceeded" and len(cli.json(repo, "checkpoints", run["run"])) == 1  # the start
    err = _one_line_error(*cli(repo, "rollback", run["run"], "--steps", "5")[::2])
    assert "has no checkpoints yet" in err and "--to 0" in err and "between" not in err


@pytest.mark.parametrize("value", ["-3", "0"])
def test_serve_refuses_a_bad_max_parallel_as_the_config_would(repo, cli, value):
    cli(repo, "init")
    for detach in ([], ["--detach"]):
        err = _one_line_error(*cli(repo, "serve", "--max-parallel", value, *detach)[::2])
        assert f"max_parallel = {value}" in err and "the command line" in err and "greater than or equal to 1" in err
    assert cli.json(repo, "status")["daemon"] is None
    assert not (repo / ".loopwright" / "logs" / "crash.log").exists()


def test_serve_detach_starts_a_daemon_or_says_why_not(repo, cli):
    cli(repo, "init")
    code, out, err = cli(repo, "serve", "--detach", "--max-parallel", "2")
    pid = cli.json(repo, "status")["daemon"]
    assert code == 0 and pid and f"daemon started (pid {pid})" in out, err
    log = repo / ".loopwright" / "logs" / "daemon.log"
    try:
        until(lambda: f"daemon {pid} serving" in log.read_text(), "the daemon to say it serves")
        assert "(max_parallel 2)" in log.read_text()  # the flag reached the daemon
        # a second one stops at the lock: its own error, in one line, and not "daemon started"
        err = _one_line_error(*cli(repo, "serve", "--detach")[::2])
        assert f"the daemon did not start: a daemon already runs for this project (pid {pid})" in err
    finally:
        os.kill(pid, signal.SIGTERM)
    until(lambda: cli.json(repo, "status")["daemon"] is None, "the daemon to stop")


@pytest.mark.parametrize("flag", ["--check", "--until"])
def test_a_check_command_that_does_not_exist_is_refused_when_posted(repo, cli, tmp_path, monkeypatch, flag):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "mytool").write_text("#!/bin/sh\nexit 0\n")
    (tools / "mytool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    err = _one_line_error(*cli(repo, "post", "do it", "--script", script, flag, "FOO=1 mytol -q")[::2])
    assert f"{flag} `FOO=1 mytol -q`: command not found: mytol" in err and "did you mean `mytool`?" in err
    err = _one_line_error(*cli(repo, "post", "do it", "--script", script, flag, "./run_tests.sh")[::2])
    assert "./run_tests.sh is not an executable file in the repository" in err and "bash ./run_tests.sh" in err
    assert cli.json(repo, "tasks") == []
    (repo / "run_tests.sh").write_text("#!/bin/sh\nexit 0\n")
    (repo / "run_tests.sh").chmod(0o755)
    (repo / "sub").mkdir()
    accepted = ["mytool -q", "FOO=1 mytool", f"{sys.executable} -m unittest", "./run_tests.sh", "cd sub && ./t.sh",
                "test -f calc.py", "$PYTHON -m pytest", "git status"]
    for command in accepted:
        code, _, err = cli(repo, "post", "do it", "--script", script, flag, command)
        assert code == 0, err
    assert [t["status"] for t in cli.json(repo, "tasks")] == ["queued"] * len(accepted)


def test_a_check_command_that_does_not_exist_is_refused_when_run(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    err = _one_line_error(*cli(repo, "run", "do it", "--script", script, "--check", "pytst-nowhere -q")[::2])
    assert "--check `pytst-nowhere -q`: command not found: pytst-nowhere" in err
    (repo / "loopwright.toml").write_text('check = "pytst-nowhere"\n')
    err = _one_line_error(*cli(repo, "run", "do it", "--script", script)[::2])
    assert "check (in the config) `pytst-nowhere`: command not found" in err
    assert cli.json(repo, "runs") == []

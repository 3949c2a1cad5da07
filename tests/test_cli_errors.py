"""Everything a user types can be wrong: one line on stderr, a hint, exit 2, never a traceback."""

from __future__ import annotations

import os
import sys

import pytest

from support import FINISH, FIX_ADD, git, write_script


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


def test_init_twice_and_exclude(repo, cli):
    code, out, _ = cli(repo, "init")
    assert code == 0 and "initialised" in out
    code, out, _ = cli(repo, "init")
    assert code == 0 and "already initialised" in out
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert exclude.count("/.loopwright/") == 1
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
    from support import call, turn

    script = write_script(tmp_path / "s.json", [turn(call("write_file", path="a.txt", content="a"))])
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "1")
    run = cli.json(repo, "run", "write", "--script", script)
    assert run["status"] == "budget_exceeded"
    cli.json(repo, "gc")
    err = _one_line_error(*cli(repo, "resume", run["run"])[::2])
    assert "worktree" in err and "gone" in err
    assert cli.json(repo, "runs")[0]["status"] == "budget_exceeded"  # the refusal changed nothing


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

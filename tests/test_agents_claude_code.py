"""`--agent claude-code` end to end: the real Claude Code CLI, run by loopwright in the run's sandbox, answered by
the loopback server from a script that drives its own tools; checkpoints, the acceptance check, the merge, a failed
check resumed in the same session, pause and resume, kill -9 of the daemon."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from support import CHECK, git, processes, until

from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.script import Script
from loopwright.memory.processes import ToolProcesses
from loopwright.memory.store import Store

READ = {"name": "Read", "arguments": {"file_path": "calc.py"}}
EDIT = {"name": "Edit",
        "arguments": {"file_path": "calc.py", "old_string": "return a - b", "new_string": "return a + b"}}
HANG = {"name": "Bash", "arguments": {"command": "echo started > notes.txt && sleep 2718", "description": "wait"}}


@pytest.fixture
def loopback(claude_cli, tmp_path, monkeypatch):
    """Start a loopback server on a script and point Claude Code (through loopwright's environment) at it: a dummy
    key, its config folder in tmp (writable in the sandbox: its sessions live there), its install readable."""

    def start(turns: list[dict]) -> LoopbackServer:
        server = LoopbackServer(Script.parse(turns)).start()
        started.append(server)
        config = tmp_path / "claude-config"
        config.mkdir(exist_ok=True)
        cli_dir = Path(claude_cli).parent
        monkeypatch.setenv("PATH", f"{cli_dir}:{Path(claude_cli).resolve().parent}:/usr/bin:/bin")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-loopback-not-a-key")
        monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
        monkeypatch.setenv("LOOPWRIGHT_SANDBOX__WRITABLE", json.dumps([str(config)]))
        monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(cli_dir.parent)]))
        monkeypatch.setenv("LOOPWRIGHT_BASE_URL", server.anthropic_base_url)  # what the sandbox lets it reach
        monkeypatch.setenv("LOOPWRIGHT_MEMORY__REFLECT", "false")
        return server

    started: list[LoopbackServer] = []
    yield start
    for server in started:
        server.stop()


def sessions(server: LoopbackServer) -> list[str]:
    """The Claude Code session each turn's request came from (in its metadata)."""
    return [json.loads(r["body"]["metadata"]["user_id"])["session_id"] for r in server.requests]


def test_a_task_through_claude_code_is_checkpointed_checked_resumed_in_its_session_and_merged(repo, cli, loopback):
    server = loopback([
        {"text": "It looks right to me."},
        {"tool_calls": [READ], "expect": "test_add"},
        {"tool_calls": [EDIT], "expect": "return a - b"},
        {"tool_calls": [{"name": "Bash", "arguments": {"command": f"{CHECK} && echo all-passed"}}]},
        {"text": "Fixed add.", "expect": "all-passed"},
    ])
    code, out, err = cli(repo, "run", "fix add", "--agent", "claude-code", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "succeeded", (result, err)
    assert server.remaining == 0 and "return a + b" in (repo / "calc.py").read_text()
    store = Store(repo / ".loopwright" / "state.db")
    run = store.run(result["run"])
    assert run.agent == "claude-code" and run.agent_session == sessions(server)[0]
    assert set(sessions(server)) == {run.agent_session}, "the failed check resumed the same session"
    assert "It looks right to me." in json.dumps(server.requests[1]["body"]["messages"])
    checks = [e.passed for _, _, e in store.events(run.id, types=("check_ran",))]
    assert checks == [False, True]
    messages = [c.message for c in store.checkpoints(run.id)]
    assert "claude-code: Edit" in messages and "claude-code: Read" not in messages
    assert "return a + b" in git(repo, "show", f"{store.checkpoints(run.id)[0].sha}:calc.py")
    started = [e.name for _, _, e in store.events(run.id, types=("tool_started",))]
    assert started == ["Read", "Edit", "Bash"]
    assert run.cost_known and run.cost_usd > 0 and run.model_calls >= 5


def _hanging(store: Store) -> str:
    until(lambda: store.runs(statuses=("running",)) and processes("sleep 2718"), "Claude Code's Bash to hang",
          timeout=120)
    (run,) = store.runs(statuses=("running",))
    return run.id


def test_pause_then_resume_continues_the_claude_code_session(repo, cli, loopback, daemon):
    server = loopback([{"tool_calls": [HANG]}, {"tool_calls": [READ], "expect": "resumed"},
                       {"tool_calls": [EDIT]}, {"text": "Fixed add."}])
    task = cli.json(repo, "post", "fix add", "--agent", "claude-code", "--check", CHECK)["task"]
    daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _hanging(store)
    cli(repo, "pause", run_id)
    until(lambda: store.run(run_id).status == "paused", "the run to pause")
    assert processes("sleep 2718") == []
    cli(repo, "resume", run_id)
    until(lambda: store.task(task).status == "succeeded", "the resumed run to succeed", timeout=120)
    assert set(sessions(server)) == {store.run(run_id).agent_session}
    assert "return a + b" in git(repo, "show", "main:calc.py")


def test_kill_9_of_the_daemon_resumes_claude_code_by_its_session_id(repo, cli, loopback, daemon):
    server = loopback([{"tool_calls": [HANG]}, {"tool_calls": [READ], "expect": "crashed"},
                       {"tool_calls": [EDIT]}, {"text": "Fixed add."}])
    task = cli.json(repo, "post", "fix add", "--agent", "claude-code", "--check", CHECK)["task"]
    d = daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _hanging(store)
    until(lambda: store.run(run_id).agent_session, "the session id to be stored")
    d.stop(signal.SIGKILL)
    daemon()
    until(lambda: store.task(task).status == "succeeded", "the run to resume and succeed", timeout=120)
    assert [r.id for r in store.runs(task_id=task)] == [run_id]
    assert set(sessions(server)) == {store.run(run_id).agent_session}
    assert processes("sleep 2718") == [] and ToolProcesses(store, run_id).recorded() == []
    assert git(repo, "show", "main:notes.txt") == "started"  # what it did before the crash was kept


def test_a_rollback_stops_claude_code_and_resumes_its_session_with_the_notice(repo, cli, loopback, daemon):
    server = loopback([{"tool_calls": [{"name": "Write", "arguments": {"file_path": "notes.txt", "content": "x\n"}}]},
                       {"tool_calls": [{"name": "Bash", "arguments": {"command": "sleep 2718"}}]},
                       {"tool_calls": [READ], "expect": "rolled back to the start"}, {"tool_calls": [EDIT]},
                       {"text": "Fixed add."}])
    task = cli.json(repo, "post", "fix add", "--agent", "claude-code", "--check", CHECK)["task"]
    daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _hanging(store)
    assert [c.message for c in store.checkpoints(run_id)] == ["claude-code: Write"]
    code, out, err = cli(repo, "rollback", run_id, "--to", "0")
    assert code == 0, err
    until(lambda: store.task(task).status == "succeeded", "the run to go on and succeed", timeout=120)
    assert set(sessions(server)) == {store.run(run_id).agent_session}
    assert "notes.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")
    assert "return a + b" in git(repo, "show", "main:calc.py")


def test_an_api_error_or_a_missing_cli_pauses_the_run_saying_what_claude_code_needs(repo, cli, loopback, monkeypatch):
    loopback([{"fault": "billing"}])  # a 400: Claude Code does not retry it
    code, out, err = cli(repo, "run", "fix add", "--agent", "claude-code", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "paused" and "claude-code exited with code 1" in result["reason"], (result, err)
    assert "api_error_status\":400" in result["reason"] and "ANTHROPIC_API_KEY" in result["reason"]
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code, out, err = cli(repo, "run", "fix add", "--agent", "claude-code", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "paused" and "claude-code could not start" in result["reason"], (result, err)
    assert "npm install -g @anthropic-ai/claude-code" in result["reason"]

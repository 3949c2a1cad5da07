"""The claude-code agent: its command line, its reading of Claude Code's stream-json output (lines recorded from the
real CLI), and the real CLI driven against the loopback server through it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support import call, turn

from loopwright.harness.agents.base import (
    AgentFinished,
    AgentOptions,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    AgentUsage,
    SessionStarted,
)
from loopwright.harness.agents.claude_code import ClaudeCodeAgent
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.script import Script

# Three runs of Claude Code 2.1.197 against the loopback: Write, Read + Grep (not a tool of this version), Edit,
# a Bash command that exits 3, text; then a run stopped by --max-turns 1; then one refused with a 401.
RECORDED = Path(__file__).parent / "recorded" / "claude-code-2.1.197.jsonl"


def test_the_command_line_starts_or_resumes_a_session_with_the_configs_flags():
    agent = ClaudeCodeAgent()
    assert agent.command("fix the tests", AgentOptions()) == [
        "claude", "-p", "fix the tests", "--output-format", "stream-json", "--verbose",
        "--permission-mode", "acceptEdits", "--allowedTools", "Bash"]
    options = AgentOptions(model="claude-sonnet-4-5", max_turns=30, permission_mode="default",
                           allowed_tools=("Bash(git *)", "Edit"), extra_args=("--add-dir", "/data"),
                           appended_instructions="Lesson: run the tests first.")
    assert ClaudeCodeAgent("/opt/claude").command("the check failed: ...", options, session_id="s-1") == [
        "/opt/claude", "-p", "the check failed: ...", "--output-format", "stream-json", "--verbose",
        "--resume", "s-1", "--model", "claude-sonnet-4-5", "--max-turns", "30", "--permission-mode", "default",
        "--allowedTools", "Bash(git *),Edit", "--append-system-prompt", "Lesson: run the tests first.",
        "--add-dir", "/data"]


def test_environment_turns_nonessential_traffic_off_and_passes_key_variables_by_name(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    env = ClaudeCodeAgent().environment()
    assert env == {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "ANTHROPIC_API_KEY": "sk-test"}
    assert "claude login" in ClaudeCodeAgent.key_hint and "ANTHROPIC_API_KEY" in ClaudeCodeAgent.key_hint


def parse_all(lines: list[str]) -> list:
    agent = ClaudeCodeAgent()
    return [event for line in lines for event in agent.parse(line)]


def test_recorded_lines_map_to_session_text_tool_calls_results_usage_and_the_end():
    runs = RECORDED.read_text().splitlines()
    events = parse_all(runs[:14])
    assert isinstance(events[0], SessionStarted) and events[0].session_id == json.loads(runs[0])["session_id"]
    assert AgentText("Writing it.") in events and AgentText("All done.") in events
    calls = [e for e in events if isinstance(e, AgentToolCall)]
    assert [(c.call_id, c.name) for c in calls] == [("call_0_0", "Write"), ("call_1_0", "Read"), ("call_1_1", "Grep"),
                                                   ("call_2_0", "Edit"), ("call_3_0", "Bash")]
    assert calls[0].arguments == {"file_path": "notes.txt", "content": "one\n"}
    results = {r.call_id: r for r in events if isinstance(r, AgentToolResult)}
    assert [(r.name, r.is_error, r.may_change_files) for r in results.values()] == [
        ("Write", False, True), ("Grep", True, False), ("Read", False, False), ("Edit", False, True),
        ("Bash", True, True)]
    assert results["call_3_0"].output == "Exit code 3\ntwo" and "1\tone" in results["call_1_0"].output
    usage = [e for e in events if isinstance(e, AgentUsage)]
    assert len(usage) == 5, "once per message, not once per content block"  # Write's message has text + tool_use
    assert usage[0].model == "claude-opus-4-8" and usage[0].cost_usd is None
    assert usage[0].usage.input_tokens == 1542 and usage[0].usage.cache_write_tokens > 0
    assert usage[1].usage.cache_read_tokens > 0
    assert events[-1] == AgentFinished(ok=True, text="All done.", total_cost_usd=json.loads(runs[13])["total_cost_usd"])


def test_recorded_ends_by_max_turns_and_by_an_api_error_are_not_ok():
    runs = RECORDED.read_text().splitlines()
    capped, refused = parse_all(runs[14:18]), parse_all(runs[18:])
    assert capped[-1] == AgentFinished(ok=False, text="Reached maximum number of turns (1)",
                                       total_cost_usd=json.loads(runs[17])["total_cost_usd"])
    assert refused[-1] == AgentFinished(ok=False, text="Invalid API key · Fix external API key", total_cost_usd=0.0)


def test_malformed_lines_never_raise():
    agent = ClaudeCodeAgent()
    for line in ["", "not json", "[1, 2]", "null", '"text"', '{"type": "assistant"}',
                 '{"type": "assistant", "message": {"content": [1, {"type": "tool_use", "input": 3}], "usage": 5}}',
                 '{"type": "user", "message": {"content": [{"type": "tool_result", "content": [{"type": "image"}]}]}}',
                 '{"type": "result", "total_cost_usd": "free", "errors": null}',
                 '{"type": "system", "subtype": "init", "session_id": 7}', '{"type": "assistant", "message": []}',
                 '{"type": "assistant", "message": {"id": "m", "usage": {"input_tokens": "x"}, "content": "hi"}}',
                 '{"type": "stream_event", "event": {}}', "{" * 5000]:
        agent.parse(line)
    assert agent.parse('{"type": "result", "total_cost_usd": "free"}') == [
        AgentFinished(ok=False, text="", total_cost_usd=None)]
    assert agent.parse('{"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "x", '
                       '"content": [{"type": "text", "text": "a"}, {"type": "image"}]}]}}') == [
        AgentToolResult("x", "", "a")]  # a call it never saw start: it may have changed files


def claude_env(home: Path, server: LoopbackServer, monkeypatch) -> dict[str, str]:
    """The real CLI's environment against the loopback: a dummy key and the loopback's address set in loopwright's
    environment (the agent passes them through by name), its home and config folder in tmp."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-loopback-not-a-key")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(home / ".claude"))
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), **ClaudeCodeAgent().environment()}


def test_the_real_cli_writes_a_file_and_runs_bash_from_a_script(claude_cli, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    script = Script.parse([
        turn(call("Write", file_path="hello.py", content="print('hello')\n"), text="Writing hello.py."),
        turn(call("Bash", command="python3 hello.py > out.txt && cat out.txt", description="run it"),
             expect="File created successfully"),
        turn(call("Read", file_path="out.txt"), expect="hello"),
        turn(text="hello.py prints hello."),
    ])
    agent = ClaudeCodeAgent(claude_cli)
    with LoopbackServer(script) as server:
        env = claude_env(tmp_path / "home", server, monkeypatch)
        options = AgentOptions(model="claude-sonnet-4-5", max_turns=10, appended_instructions="Lesson: run it.")
        done = subprocess.run(agent.command("write hello.py and run it", options), cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.remaining == 0 and server.side_requests == []  # nonessential traffic off: only the turns
        sent = server.requests[0]["body"]
        assert sent["model"] == "claude-sonnet-4-5" and "Lesson: run it." in json.dumps(sent["system"])
    events = [e for line in done.stdout.splitlines() for e in agent.parse(line)]
    assert (work / "out.txt").read_text() == "hello\n"
    session = events[0]
    assert isinstance(session, SessionStarted) and len(session.session_id) == 36
    assert [(e.name, e.call_id) for e in events if isinstance(e, AgentToolCall)] == [
        ("Write", "call_0_0"), ("Bash", "call_1_0"), ("Read", "call_2_0")]
    results = [e for e in events if isinstance(e, AgentToolResult)]
    assert [(r.name, r.is_error, r.may_change_files) for r in results] == [
        ("Write", False, True), ("Bash", False, True), ("Read", False, False)]
    assert results[1].output == "hello"
    usage = [e.usage for e in events if isinstance(e, AgentUsage)]
    assert len(usage) == 4 and all(u.total - u.output_tokens > 1000 for u in usage)
    finished = events[-1]
    assert isinstance(finished, AgentFinished) and finished.ok and finished.text == "hello.py prints hello."
    assert finished.total_cost_usd is not None and finished.total_cost_usd > 0


def test_the_real_cli_resumes_its_session_with_the_checks_output(claude_cli, tmp_path, monkeypatch):
    script = Script.parse([turn(text="Done, I think."),
                           turn(call("Bash", command="echo fixed > fix.txt"), expect="FAILED: test_add"),
                           turn(text="Fixed now.")])
    agent = ClaudeCodeAgent(claude_cli)
    with LoopbackServer(script) as server:
        env = claude_env(tmp_path / "home", server, monkeypatch)
        first = subprocess.run(agent.command("fix add", AgentOptions()), cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        (session,) = [e for line in first.stdout.splitlines() for e in agent.parse(line)
                      if isinstance(e, SessionStarted)]
        again = subprocess.run(agent.command("The check failed:\nFAILED: test_add", AgentOptions(),
                                             session_id=session.session_id), cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr[-2000:]
        resumed = server.requests[-1]["body"]["messages"]
    events = [e for line in again.stdout.splitlines() for e in agent.parse(line)]
    assert events[0] == session, "the same session"
    assert "fix add" in json.dumps(resumed[0]) and "Done, I think." in json.dumps(resumed)
    assert (tmp_path / "fix.txt").exists() and events[-1].text == "Fixed now."


def test_the_loopback_answers_the_real_clis_side_requests_apart_from_the_script(claude_cli, tmp_path, monkeypatch):
    """With nonessential traffic on, Claude Code first asks for a title for the session (a request that offers no
    tools): answered with placeholders, it takes no scripted turn."""
    script = Script.parse([turn(call("Write", file_path="a.txt", content="a\n")), turn(text="Wrote a.txt.")])
    with LoopbackServer(script) as server:
        env = claude_env(tmp_path / "home", server, monkeypatch)
        del env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]
        done = subprocess.run(ClaudeCodeAgent(claude_cli).command("write the file a.txt", AgentOptions()),
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.remaining == 0
        assert [s for s in server.side_requests if "title" in s], server.side_requests
        assert len(server.requests) == 2 + len(server.side_requests)
    assert (tmp_path / "a.txt").read_text() == "a\n"
    assert json.loads(done.stdout.splitlines()[-1])["result"] == "Wrote a.txt."

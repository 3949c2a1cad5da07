"""The `codex` agent: its command lines, its parse of `codex exec --json` lines (recorded from the real CLI), and
the real Codex CLI run against the loopback server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import CHECK, git, needs_bwrap, processes, until

from loopwright.harness.agents.base import (
    AgentFinished,
    AgentOptions,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    AgentUsage,
    SessionStarted,
)
from loopwright.harness.agents.codex import CodexAgent
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.messages import Usage
from loopwright.harness.script import Script
from loopwright.memory.store import Store

THREAD = "01a2522b-b061-74b1-a529-310f788cbbe1"

# Recorded from `codex exec --json` 0.171.0 against the loopback server.
RECORDED = [
    '{"type":"thread.started","thread_id":"01a2522b-b061-74b1-a529-310f788cbbe1"}',
    '{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `gpt-5` not found. '
    'Defaulting to fallback metadata; this can degrade performance and cause issues."}}',
    '{"type":"turn.started"}',
    '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Running a command."}}',
    '{"type":"item.started","item":{"id":"item_2","type":"command_execution","command":"/bin/bash -lc \'echo hello '
    '> out.txt && cat out.txt\'","aggregated_output":"","exit_code":null,"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_2","type":"command_execution","command":"/bin/bash -lc \'echo hello'
    ' > out.txt && cat out.txt\'","aggregated_output":"hello\\n","exit_code":0,"status":"completed"}}',
    '{"type":"item.started","item":{"id":"item_3","type":"file_change","changes":[{"path":"/tmp/hc/repo/a.py",'
    '"kind":"update"}],"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_3","type":"file_change","changes":[{"path":"/tmp/hc/repo/a.py",'
    '"kind":"update"}],"status":"completed"}}',
    '{"type":"item.started","item":{"id":"item_4","type":"command_execution","command":"/bin/bash -lc false",'
    '"aggregated_output":"","exit_code":null,"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_4","type":"command_execution","command":"/bin/bash -lc false",'
    '"aggregated_output":"","exit_code":1,"status":"failed"}}',
    '{"type":"item.completed","item":{"id":"item_5","type":"agent_message","text":"Done."}}',
    '{"type":"turn.completed","usage":{"input_tokens":30029,"cached_input_tokens":19840,"cache_write_input_tokens":0,'
    '"output_tokens":60,"reasoning_output_tokens":0}}',
]
RECORDED_FAILURE = [
    '{"type":"error","message":"Reconnecting... 1/2 (stream disconnected before completion: Transport error: '
    'network error: error decoding response body)"}',
    '{"type":"error","message":"Connection failed: error sending request"}',
    '{"type":"turn.failed","error":{"message":"Connection failed: error sending request"}}',
]
RECORDED_MCP = [
    '{"type":"item.started","item":{"id":"item_2","type":"mcp_tool_call","server":"docs","tool":"search","arguments":'
    '{"q":"add"},"result":null,"error":null,"status":"in_progress"}}',
    '{"type":"item.completed","item":{"id":"item_2","type":"mcp_tool_call","server":"docs","tool":"search",'
    '"arguments":{"q":"add"},"result":{"content":[{"type":"text","text":"found add"}],"structured_content":null},'
    '"error":null,"status":"completed"}}',
    '{"type":"item.completed","item":{"id":"item_3","type":"mcp_tool_call","server":"docs","tool":"search",'
    '"arguments":{"q":"add"},"result":null,"error":{"message":"MCP tool call requires approval, but approval policy '
    'is never"},"status":"failed"}}',
]
RECORDED_REASONING = ('{"type":"item.completed","item":{"id":"item_0","type":"reasoning","text":"Checking the tests '
                      'first."}}')
# The 0.171.0 CLI has no plan tool in exec: the shape of a to-do list from Codex's exec event schema.
DOCUMENTED = [
    '{"type":"item.started","item":{"id":"item_7","type":"todo_list","items":[{"text":"fix add","completed":false}]}}',
    '{"type":"item.updated","item":{"id":"item_7","type":"todo_list","items":[{"text":"fix add","completed":true}]}}',
    '{"type":"item.completed","item":{"id":"item_7","type":"todo_list","items":[{"text":"fix add","completed":true}]}}',
]


def events(agent: CodexAgent, lines: list[str]) -> list:
    return [e for line in lines for e in agent.parse(line)]


def test_recorded_lines_map_to_session_text_tool_calls_results_and_usage():
    agent = CodexAgent()
    agent.command("task", AgentOptions(model="gpt-5"))
    assert events(agent, RECORDED) == [
        SessionStarted(session_id=THREAD),
        AgentText(text="Running a command."),
        AgentToolCall(call_id="item_2", name="shell", arguments={"command": "echo hello > out.txt && cat out.txt"}),
        AgentToolResult(call_id="item_2", name="shell", output="hello\n"),
        AgentToolCall(call_id="item_3", name="apply_patch", arguments={"changes": "update /tmp/hc/repo/a.py"}),
        AgentToolResult(call_id="item_3", name="apply_patch", output="update /tmp/hc/repo/a.py"),
        AgentToolCall(call_id="item_4", name="shell", arguments={"command": "false"}),
        AgentToolResult(call_id="item_4", name="shell", output="", is_error=True),
        AgentText(text="Done."),
        AgentUsage(usage=Usage(input_tokens=10189, output_tokens=60, cache_read_tokens=19840), model="gpt-5"),
        AgentFinished(ok=True, text="Done."),
    ]
    # a reconnection is said in an `error` line too, while the turn goes on: only `turn.failed` ends it
    assert events(agent, RECORDED_FAILURE) == [AgentFinished(ok=False, text="Connection failed: error sending request")]


def test_mcp_calls_reasoning_and_todo_lists_and_which_may_change_files():
    assert events(CodexAgent(), [*RECORDED_MCP, RECORDED_REASONING, *DOCUMENTED]) == [
        AgentToolCall(call_id="item_2", name="mcp:docs/search", arguments={"q": "add"}),
        AgentToolResult(call_id="item_2", name="mcp:docs/search", output="found add"),
        AgentToolCall(call_id="item_3", name="mcp:docs/search", arguments={"q": "add"}),  # its start was not seen
        AgentToolResult(call_id="item_3", name="mcp:docs/search", is_error=True,
                        output="MCP tool call requires approval, but approval policy is never"),
        AgentText(text="Checking the tests first.", reasoning=True),
        AgentToolCall(call_id="item_7", name="todo_list", arguments={"steps": 1}),
        AgentToolResult(call_id="item_7", name="todo_list", output="[x] fix add", may_change_files=False),
    ]


@pytest.mark.parametrize("line", [
    "", "not json", "[1, 2]", "null", '{"type": 3}', '{"type": "thread.started"}',
    '{"type": "item.completed", "item": 5}', '{"type": "item.completed", "item": {"type": "command_execution"}}',
    '{"type": "item.completed", "item": {"type": "file_change", "changes": [7]}}',
    '{"type": "turn.completed", "usage": {"input_tokens": "many"}}', '{"type": "turn.failed", "error": "x"}',
    '{"type": "item.completed", "item": {"id": "x", "type": "mcp_tool_call", "error": "boom"}}',
    '{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"cut in the mid',
])
def test_a_malformed_line_never_raises(line):
    assert isinstance(CodexAgent().parse(line), list)


def test_a_resumed_thread_numbers_its_items_again_and_each_call_is_reported():
    agent = CodexAgent()
    started = f'{{"type":"thread.started","thread_id":"{THREAD}"}}'
    calls = [e for e in events(agent, [started, *RECORDED_MCP[:2], started, *RECORDED_MCP[:2]])
             if isinstance(e, AgentToolCall)]
    assert [c.call_id for c in calls] == ["item_2", "item_2"]


def test_usage_is_what_each_turn_added_to_the_threads_total():
    agent = CodexAgent()
    agent.command("task", AgentOptions())
    agent.parse(f'{{"type":"thread.started","thread_id":"{THREAD}"}}')
    first = '{"type":"turn.completed","usage":{"input_tokens":9867,"cached_input_tokens":0,"output_tokens":20}}'
    # the resumed thread's total, recorded from the real CLI: its first turn is in it
    second = '{"type":"turn.completed","usage":{"input_tokens":19811,"cached_input_tokens":9856,"output_tokens":40}}'
    assert agent.parse(first)[0] == AgentUsage(usage=Usage(input_tokens=9867, output_tokens=20))
    agent.command("again", AgentOptions(), session_id=THREAD)
    agent.parse(f'{{"type":"thread.started","thread_id":"{THREAD}"}}')
    assert agent.parse(second)[0] == AgentUsage(usage=Usage(input_tokens=88, output_tokens=20,
                                                            cache_read_tokens=9856))


def test_after_a_restart_a_resume_counts_from_the_total_the_threads_session_file_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "the-users"))  # the run's copy (in the sandbox) is read instead
    day = tmp_path / "sessions" / "2026" / "12" / "07"
    day.mkdir(parents=True)
    total = {"input_tokens": 9867, "cached_input_tokens": 0, "output_tokens": 20}
    (day / f"rollout-2026-12-07T20-20-53-{THREAD}.jsonl").write_text(json.dumps(
        {"type": "event_msg", "payload": {"type": "token_count", "info": {"total_token_usage": total}}}) + "\n")
    agent = CodexAgent()
    agent.command("again", AgentOptions(config_folder=tmp_path), session_id=THREAD)
    agent.parse(f'{{"type":"thread.started","thread_id":"{THREAD}"}}')
    usage = agent.parse('{"type":"turn.completed","usage":{"input_tokens":19811,"cached_input_tokens":9856,'
                        '"output_tokens":40}}')[0]
    assert usage == AgentUsage(usage=Usage(input_tokens=88, output_tokens=20, cache_read_tokens=9856))


def test_the_command_starts_or_resumes_a_thread_with_codexs_sandbox_off_and_loopwrights_instructions(
        tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text('model = "gpt-5-mini"\n')
    note = 'Lesson: run "pytest -q" first.\n\\ and \x7f and é'
    agent = CodexAgent("/opt/codex")
    options = AgentOptions(extra_args=("--add-dir", "/data"), appended_instructions=note)
    argv = agent.command("-fix it", options)
    assert argv[:3] == ["/opt/codex", "exec", "--json"] and argv[-4:] == ["--add-dir", "/data", "--", "-fix it"]
    overrides = tomllib.loads("\n".join(argv[i + 1] for i, a in enumerate(argv) if a == "-c"))
    assert overrides == {"sandbox_mode": "danger-full-access", "approval_policy": "never",
                         "developer_instructions": note}
    assert agent.model == "gpt-5-mini"  # Codex's own default model prices its usage
    argv = agent.command("the check failed", AgentOptions(model="gpt-5", permission_mode="workspace-write",
                                                          appended_instructions=note), session_id=THREAD)
    assert argv[:5] == ["/opt/codex", "exec", "resume", "--json", "-c"] and 'sandbox_mode="workspace-write"' in argv
    assert argv[-3:] == ["--", THREAD, f"the check failed\n\n{note}"] and "--model" in argv and agent.model == "gpt-5"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert agent.environment() == {"OPENAI_API_KEY": "sk-test"}  # CODEX_HOME: the run's copy in a jail


# -- the real CLI --------------------------------------------------------------------------------------------------


def codex_home_for(home: Path, base_url: str, settings: str = "") -> Path:
    """A CODEX_HOME whose config sends Codex to the loopback over plain HTTP (a custom provider: no Responses
    WebSocket, no public host), with no retries, and no plugin sync, analytics or update check (`settings`: more
    top-level lines)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'''{settings}
model_provider = "loopback"
check_for_update_on_startup = false

[model_providers.loopback]
name = "loopback"
base_url = "{base_url}"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false

[analytics]
enabled = false
''')
    return home


def run_codex(agent: CodexAgent, argv: list[str], cwd: Path, home: Path) -> tuple[list, subprocess.CompletedProcess]:
    env = {**os.environ, "CODEX_HOME": str(home), "OPENAI_API_KEY": "loopback-needs-no-key", **agent.environment()}
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    return events(agent, proc.stdout.splitlines()), proc


PATCH = "*** Begin Patch\n*** Update File: calc.py\n@@\n-    return a - b\n+    return a + b\n*** End Patch\n"


def test_the_real_codex_runs_a_command_and_edits_a_file_against_the_loopback_then_resumes_its_thread(
        codex_cli, repo, tmp_path, monkeypatch):
    script = Script.parse([
        {"text": "Looking first.", "reasoning": "The tests say add is wrong.",
         "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "grep -n 'a - b' calc.py"}}]},
        {"tool_calls": [{"name": "apply_patch", "raw_arguments": PATCH}], "expect": "return a - b"},
        {"text": "Fixed add.", "expect": "Updated the following files"},
        {"text": "Still fixed.", "expect": "the check failed"},
    ])
    agent = CodexAgent(codex_cli)
    with LoopbackServer(script) as server:
        home = codex_home_for(tmp_path / "codex-home", server.openai_base_url)
        monkeypatch.setenv("CODEX_HOME", str(home))
        options = AgentOptions(model="gpt-5.5", appended_instructions="LESSON: read before editing.")
        seen, proc = run_codex(agent, agent.command("fix add", options), repo, home)
        assert proc.returncode == 0, proc.stderr[-2000:]
        thread = seen[0].session_id
        assert seen[0] == SessionStarted(session_id=thread)
        calls = [e for e in seen if isinstance(e, AgentToolCall)]
        results = [e for e in seen if isinstance(e, AgentToolResult)]
        assert [(c.name, c.arguments) for c in calls] == [
            ("shell", {"command": "grep -n 'a - b' calc.py"}), ("apply_patch", {"changes": f"update {repo}/calc.py"})]
        assert [(r.name, r.is_error, r.may_change_files) for r in results] == [("shell", False, True),
                                                                               ("apply_patch", False, True)]
        assert "2:    return a - b" in results[0].output
        assert "return a + b" in (repo / "calc.py").read_text() and git(repo, "status", "--short") == "M calc.py"
        assert [(e.text, e.reasoning) for e in seen if isinstance(e, AgentText)] == [
            ("The tests say add is wrong.", True), ("Looking first.", False), ("Fixed add.", False)]
        usage = [e for e in seen if isinstance(e, AgentUsage)]
        assert len(usage) == 1 and usage[0].model == "gpt-5.5" and usage[0].usage.output_tokens == 60
        assert seen[-1] == AgentFinished(ok=True, text="Fixed add.")
        first = server.requests[0]["body"]
        assert "LESSON: read before editing." in json.dumps(first["input"])  # as developer instructions
        assert {t.get("name"): t["type"] for t in first["tools"]}["apply_patch"] == "custom"

        again, proc = run_codex(agent, agent.command("the check failed: run it", options, session_id=thread),
                                repo, home)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert again[0] == SessionStarted(session_id=thread) and again[-1] == AgentFinished(ok=True,
                                                                                           text="Still fixed.")
        added = [e.usage for e in again if isinstance(e, AgentUsage)]
        assert len(added) == 1 and added[0].output_tokens == 20  # this turn's, not the thread's total
        assert server.remaining == 0 and len(server.requests) == 4  # no side requests
        assert all(r["path"] == "/v1/responses" for r in server.requests)


def test_the_real_codex_reports_a_failed_turn_when_its_api_fails(codex_cli, repo, tmp_path):
    agent = CodexAgent(codex_cli)
    with LoopbackServer(Script.parse([{"fault": "401"}])) as server:
        home = codex_home_for(tmp_path / "codex-home", server.openai_base_url)
        seen, proc = run_codex(agent, agent.command("fix add", AgentOptions(model="gpt-5.5")), repo, home)
    assert proc.returncode != 0
    assert isinstance(seen[-1], AgentFinished) and not seen[-1].ok and "invalid x-api-key" in seen[-1].text


def test_codexs_compaction_request_is_answered_apart_from_the_script(codex_cli, repo, tmp_path):
    script = Script.parse([
        {"text": "Running.", "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "echo one"}}]},
        {"text": "Done."},
    ])
    agent = CodexAgent(codex_cli)
    with LoopbackServer(script) as server:
        home = codex_home_for(tmp_path / "codex-home", server.openai_base_url,
                              "model_auto_compact_token_limit = 5000")  # below its first request: it compacts
        seen, proc = run_codex(agent, agent.command("go", AgentOptions(model="gpt-5.5")), repo, home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [e.text for e in seen if isinstance(e, AgentText)] == ["Running.", "Done."]
    assert server.remaining == 0 and "compaction" in server.side_requests


MCP_SERVER = r'''
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if "id" not in req:
        continue
    if req["method"] == "initialize":
        result = {"protocolVersion": req["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "docs", "version": "1"}}
    elif req["method"] == "tools/list":
        result = {"tools": [{"name": "search", "description": "Search the docs.", "inputSchema": {
            "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}
    elif req["method"] == "tools/call" and req["params"]["arguments"].get("q"):
        result = {"content": [{"type": "text", "text": "found " + req["params"]["arguments"]["q"]}]}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32602, "message": "no query"}}))
        sys.stdout.flush()
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}))
    sys.stdout.flush()
'''


def test_the_real_codex_calls_an_mcp_servers_tool(codex_cli, repo, tmp_path):
    (tmp_path / "mcp_docs.py").write_text(MCP_SERVER)
    script = Script.parse([
        {"tool_calls": [{"name": "mcp__docs.search", "arguments": {"q": "add"}}]},
        {"tool_calls": [{"name": "mcp__docs.search", "arguments": {}}], "expect": "found add"},
        {"text": "Done.", "expect": "no query"},
    ])
    agent = CodexAgent(codex_cli)
    with LoopbackServer(script) as server:
        # gpt-5, which Codex's model list does not know, gets an MCP server's tools at once (no tool search)
        home = codex_home_for(tmp_path / "codex-home", server.openai_base_url)
        with (home / "config.toml").open("a") as config:
            config.write(f'\n[mcp_servers.docs]\ncommand = "{sys.executable}"\nargs = ["{tmp_path / "mcp_docs.py"}"]\n')
        seen, proc = run_codex(agent, agent.command("search", AgentOptions(model="gpt-5")), repo, home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tools = [e for e in seen if isinstance(e, AgentToolCall | AgentToolResult)]
    assert tools[:3] == [
        AgentToolCall(call_id="item_1", name="mcp:docs/search", arguments={"q": "add"}),
        AgentToolResult(call_id="item_1", name="mcp:docs/search", output="found add"),
        AgentToolCall(call_id="item_2", name="mcp:docs/search", arguments={}),
    ]
    assert tools[3].is_error and tools[3].may_change_files and "no query" in tools[3].output


# -- loopwright run --agent codex ------------------------------------------------------------------------------

CODEX_CONFIG = ('[memory]\nreflect = false\n[agents.codex]\nmodel = "gpt-5.5"\n'
                '[models."gpt-5.5"]\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 10.0\n'
                'cache_read_usd_per_mtok = 0.1\n')


def use_codex(codex_cli: str, repo: Path, server: LoopbackServer, tmp_path: Path, monkeypatch) -> None:
    """The project's runs go to the real Codex (`--agent codex`), which talks to `server` (in the sandbox where
    bwrap works: its install readable, the loopback reachable, CODEX_HOME the run's copy of this one), no
    reflection, gpt-5.5 priced."""
    monkeypatch.setenv("CODEX_HOME", str(codex_home_for(tmp_path / "codex-home", server.openai_base_url)))
    monkeypatch.setenv("OPENAI_API_KEY", "loopback-needs-no-key")
    monkeypatch.setenv("PATH", f"{Path(codex_cli).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(Path(codex_cli).parent.parent)]))
    monkeypatch.setenv("LOOPWRIGHT_BASE_URL", server.openai_base_url)  # what the sandbox lets it reach
    (repo / ".loopwright").mkdir(exist_ok=True)
    (repo / ".loopwright" / "config.toml").write_text(CODEX_CONFIG)


def add_file(name: str, line: str) -> str:
    return f"*** Begin Patch\n*** Add File: {name}\n+{line}\n*** End Patch\n"


def test_loopwright_runs_codex_checkpoints_its_edits_resumes_its_thread_after_a_failed_check_and_merges(
        codex_cli, repo, cli, tmp_path, monkeypatch):
    script = Script.parse([
        {"text": "Looking first.",
         "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "grep -n 'a - b' calc.py"}}]},
        {"tool_calls": [{"name": "apply_patch", "raw_arguments": add_file("notes.txt", "add subtracts")}],
         "expect": "return a - b"},
        {"text": "Noted.", "expect": "Success"},
        {"tool_calls": [{"name": "apply_patch", "raw_arguments": PATCH}], "expect": "test_add"},
        {"text": "Fixed add.", "expect": "Success"},
    ])
    with LoopbackServer(script) as server:
        use_codex(codex_cli, repo, server, tmp_path, monkeypatch)
        code, out, err = cli(repo, "run", "fix add", "--agent", "codex", "--check", CHECK, "--json")
        result = json.loads(out)
        assert result["status"] == "succeeded", (result, err)
        assert server.remaining == 0
    store = Store(repo / ".loopwright" / "state.db")
    run = store.run(result["run"])
    assert run.agent_session and result["agent"] == "codex"
    assert [e.passed for _, _, e in store.events(run.id, types=("check_ran",))] == [False, True]
    prompts = [m.text for m in store.conversation(run.id) if m.role == "user"]
    assert len(prompts) == 2 and "test_add" in prompts[1]
    assert "Looking first." in json.dumps(server.requests[3]["body"]["input"])  # the same thread: its history
    assert [c.message for c in store.checkpoints(run.id)][:2] == ["codex: apply_patch", "codex: apply_patch"]
    started = [e.name for _, _, e in store.events(run.id, types=("tool_started",))]
    assert started == ["shell", "apply_patch", "apply_patch"]
    assert git(repo, "show", "main:notes.txt") == "add subtracts"
    assert "return a + b" in git(repo, "show", "main:calc.py")
    assert run.model_calls == 2 and run.output_tokens == 100  # one usage per Codex turn: 3 requests, then 2
    assert result["cost_usd"] and result["cost_usd"] > 0  # priced by the table under [agents.codex] model


CUT_SHORT = [
    {"tool_calls": [{"name": "apply_patch", "raw_arguments": add_file("notes.txt", "started")}]},
    {"fault": "slow", "delay": 120},  # Codex waits here for its second answer until it is stopped
    {"tool_calls": [{"name": "apply_patch", "raw_arguments": PATCH}], "expect": "has been resumed"},
    {"text": "Fixed add.", "expect": "Success"},
]


def _codex_waiting(store: Store, server: LoopbackServer, marker: str) -> str:
    until(lambda: len(server.requests) >= 2 and processes(marker), "Codex to wait for its second answer")
    (run,) = store.runs(statuses=("running",))
    return run.id


def _resumed_in_its_thread(store: Store, server: LoopbackServer, task: str, run_id: str, marker: str) -> None:
    until(lambda: store.task(task).status == "succeeded", "the resumed run to succeed", timeout=90)
    assert server.remaining == 0 and processes(marker) == []
    assert 'started' in json.dumps(server.requests[-1]["body"]["input"])  # the thread's history came along
    prompts = [m.text for m in store.conversation(run_id) if m.role == "user"]
    assert "has been resumed" in prompts[-1]
    assert [r.id for r in store.runs(task_id=task)] == [run_id]
    run = store.run(run_id)  # the turn cut short is in the total of Codex's session file: not counted
    assert (run.model_calls, run.output_tokens) == (1, 40)


def test_a_paused_codex_run_resumes_its_thread(codex_cli, repo, cli, daemon, tmp_path, monkeypatch):
    with LoopbackServer(Script.parse(CUT_SHORT)) as server:
        use_codex(codex_cli, repo, server, tmp_path, monkeypatch)
        task = cli.json(repo, "post", "fix add (pause me)", "--agent", "codex", "--check", CHECK)["task"]
        daemon()
        store = Store(repo / ".loopwright" / "state.db")
        run_id = _codex_waiting(store, server, "pause me")
        thread = store.run(run_id).agent_session
        cli(repo, "pause", run_id)
        until(lambda: store.run(run_id).status == "paused", "the run to pause")
        assert processes("pause me") == []
        cli(repo, "resume", run_id)
        _resumed_in_its_thread(store, server, task, run_id, "pause me")
        assert store.run(run_id).agent_session == thread
    assert git(repo, "show", "main:notes.txt") == "started" and "a + b" in git(repo, "show", "main:calc.py")


def test_after_kill_9_of_the_daemon_a_codex_run_resumes_its_thread(codex_cli, repo, cli, daemon, tmp_path,
                                                                    monkeypatch):
    with LoopbackServer(Script.parse(CUT_SHORT)) as server:
        use_codex(codex_cli, repo, server, tmp_path, monkeypatch)
        task = cli.json(repo, "post", "fix add (crash me)", "--agent", "codex", "--check", CHECK)["task"]
        d = daemon()
        store = Store(repo / ".loopwright" / "state.db")
        run_id = _codex_waiting(store, server, "crash me")
        d.stop(signal.SIGKILL)
        daemon()
        _resumed_in_its_thread(store, server, task, run_id, "crash me")
    assert git(repo, "show", "main:notes.txt") == "started"


def test_a_rollback_stops_codex_and_resumes_its_thread_with_the_notice(codex_cli, repo, cli, daemon, tmp_path,
                                                                       monkeypatch):
    script = [*CUT_SHORT[:2], {**CUT_SHORT[2], "expect": "rolled back to the start"}, CUT_SHORT[3]]
    with LoopbackServer(Script.parse(script)) as server:
        use_codex(codex_cli, repo, server, tmp_path, monkeypatch)
        task = cli.json(repo, "post", "fix add (roll me back)", "--agent", "codex", "--check", CHECK)["task"]
        daemon()
        store = Store(repo / ".loopwright" / "state.db")
        run_id = _codex_waiting(store, server, "roll me back")
        until(lambda: store.checkpoints(run_id), "the checkpoint of notes.txt")
        code, out, err = cli(repo, "rollback", run_id, "--to", "0")
        assert code == 0, err
        until(lambda: store.task(task).status == "succeeded", "the run to go on and succeed", timeout=90)
        assert server.remaining == 0 and processes("roll me back") == []
    assert "notes.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")
    assert "return a + b" in git(repo, "show", "main:calc.py")
    run = store.run(run_id)  # the same parse went on: the stopped turn's tokens came with the next turn's total
    assert (run.model_calls, run.output_tokens) == (1, 60)


def test_a_codex_that_fails_pauses_the_run_saying_what_it_needs(codex_cli, repo, cli, tmp_path, monkeypatch):
    with LoopbackServer(Script.parse([{"fault": "401"}])) as server:
        use_codex(codex_cli, repo, server, tmp_path, monkeypatch)
        code, out, err = cli(repo, "run", "fix add", "--agent", "codex", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "paused" and "codex exited with code 1" in result["reason"], result
    assert "invalid x-api-key" in result["reason"] and "OPENAI_API_KEY" in result["reason"]
    monkeypatch.setenv("PATH", os.defpath)  # no codex on it
    code, out, err = cli(repo, "resume", result["run"], "--json")
    assert "codex could not start" in out + err and "npm install -g @openai/codex" in out + err, (out, err)


@needs_bwrap
def test_in_loopwrights_jail_codex_reaches_the_loopback_through_the_proxy_and_its_own_sandbox_cannot_nest(
        codex_cli, repo, cli, tmp_path, monkeypatch):
    script = Script.parse([
        {"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "echo from the jail"}}]},
        {"tool_calls": [{"name": "apply_patch", "raw_arguments": PATCH}], "expect": "from the jail"},
        {"text": "Fixed add."},
        {"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "echo nested"}}]},
        {"text": "Could not run it."},
    ])
    with LoopbackServer(script) as server:
        use_codex(codex_cli, repo, server, tmp_path, monkeypatch)

        def jailed(codex: str = "") -> None:  # the loopback is reached through the jail's proxy
            (repo / ".loopwright" / "config.toml").write_text(
                f'base_url = "{server.openai_base_url}"\n[sandbox]\nmode = "bwrap"\n'
                f'readable = ["{Path(codex_cli).parent.parent}"]\n'
                f'[memory]\nreflect = false\n[agents.codex]\nmodel = "gpt-5.5"\n{codex}')

        jailed()
        result = cli.json(repo, "run", "fix add", "--agent", "codex", "--check", CHECK)
        assert result["status"] == "succeeded", result
        jailed('permission_mode = "workspace-write"\n')  # Codex's own sandbox on, inside loopwright's
        nested = cli.json(repo, "run", "say hi", "--agent", "codex", "--check", "true")
    store = Store(repo / ".loopwright" / "state.db")
    (shell,) = [e for _, _, e in store.events(nested["run"], types=("tool_finished",))]
    assert shell.is_error and "Creating new namespace failed" in shell.preview

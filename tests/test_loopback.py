"""The loopback server at the HTTP level: recording, consumption order, faults on the wire, expect, the command."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest

from loopwright.harness.loopback import LoopbackServer, main
from loopwright.harness.loopback_wire import last_user_text
from loopwright.harness.script import Script

TURN = {"text": "Looking.", "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}]}
SECRET = "sk-test-not-a-real-key-0123"


def post(server: LoopbackServer, path: str, body: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(server.base_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "x-api-key": SECRET,
                                          "authorization": f"Bearer {SECRET}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def raw_post(server: LoopbackServer, path: str) -> bytes:
    """Send one request on a bare socket and return whatever comes back before the server closes."""
    host, port = server.httpd.server_address[:2]
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            chunks.append(b"<RST>")
    return b"".join(chunks)


ANTHROPIC_BODY = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_turns_are_rendered_per_endpoint_and_requests_recorded_without_keys():
    with LoopbackServer(Script.parse([TURN] * 3)) as server:
        assert server.openai_base_url == server.base_url + "/v1" and server.base_url.startswith("http://127.0.0.1:")
        assert server.remaining == 3
        _, _, anth = post(server, "/v1/messages", ANTHROPIC_BODY)
        _, _, chat = post(server, "/v1/chat/completions", CHAT_BODY)
        _, _, resp = post(server, "/v1/responses", {"model": "m", "input": "hi"})
        assert server.remaining == 0
        recorded = server.requests
    assert anth["content"][1] == {"type": "tool_use", "id": "call_0_0", "name": "read_file", "input": {"path": "a.py"}}
    assert anth["stop_reason"] == "tool_use" and anth["usage"]["cache_read_input_tokens"] == 0  # billed as sent
    assert 0 < anth["usage"]["input_tokens"] < 100
    call = chat["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "call_1_0" and json.loads(call["function"]["arguments"]) == {"path": "a.py"}
    assert chat["choices"][0]["finish_reason"] == "tool_calls" and chat["usage"]["completion_tokens"] == 20
    assert [o["type"] for o in resp["output"]] == ["message", "function_call"]
    assert resp["output"][1]["call_id"] == "call_2_0"
    assert [r["path"] for r in recorded] == ["/v1/messages", "/v1/chat/completions", "/v1/responses"]
    assert recorded[0]["body"] == ANTHROPIC_BODY and set(recorded[0]) == {"path", "body", "at"}
    assert SECRET not in json.dumps(recorded)


def test_status_faults_use_each_providers_error_shape():
    entries = [{"fault": "429", "retry_after": 2.5}, {"fault": "429"}, {"fault": "529"}, {"fault": "500"},
               {"fault": "401"}, TURN]
    with LoopbackServer(Script.parse(entries)) as server:
        code, headers, body = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert (code, headers["retry-after"], body["type"], body["error"]["type"]) == (429, "2.5", "error",
                                                                                       "rate_limit_error")
        code, headers, body = post(server, "/v1/chat/completions", CHAT_BODY)
        assert (code, headers["retry-after"]) == (429, "1") and body["error"]["code"] == "rate_limit_error"
        code, _, body = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert (code, body["error"]["type"]) == (529, "overloaded_error")
        code, _, body = post(server, "/v1/responses", {"model": "m", "input": "hi"})
        assert code == 500 and "message" in body["error"]
        code, _, body = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert (code, body["error"]["type"]) == (401, "authentication_error")
        assert post(server, "/v1/messages", ANTHROPIC_BODY)[0] == 200
        assert server.remaining == 0


def test_billing_overflow_empty_and_reset_only_faults_look_like_each_api():
    entries = [{"fault": "billing"}, {"fault": "billing"}, {"fault": "context_overflow"},
               {"fault": "context_overflow"}, {"fault": "empty"}, {"fault": "empty"}, {"fault": "empty"},
               {"fault": "429", "reset_after": 5}, {"fault": "429", "reset_after": 5}]
    responses = {"model": "m", "input": "hi"}
    with LoopbackServer(Script.parse(entries)) as server:
        code, _, body = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert (code, body["error"]["type"]) == (400, "invalid_request_error")
        assert "credit balance is too low" in body["error"]["message"]
        code, _, body = post(server, "/v1/chat/completions", CHAT_BODY)
        assert (code, body["error"]["code"], body["error"]["type"]) == (429, "insufficient_quota", "insufficient_quota")
        code, _, body = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert code == 400 and body["error"]["message"].startswith("prompt is too long: ")
        code, _, body = post(server, "/v1/responses", responses)
        assert (code, body["error"]["code"]) == (400, "context_length_exceeded")
        assert [post(server, *r)[2][key] for r, key in [(("/v1/messages", ANTHROPIC_BODY), "content"),
                                                         (("/v1/chat/completions", CHAT_BODY), "choices"),
                                                         (("/v1/responses", responses), "output")]] == [[], [], []]
        code, headers, _ = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert code == 429 and headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert not {"retry-after", "anthropic-ratelimit-requests-remaining"} & set(map(str.lower, headers))
        code, headers, _ = post(server, "/v1/chat/completions", CHAT_BODY)
        assert (code, headers["x-ratelimit-reset-requests"]) == (429, "5.000s")
        assert not {"retry-after", "x-ratelimit-remaining-requests"} & set(map(str.lower, headers))
        assert server.remaining == 0


def test_reset_and_truncated_break_the_connection():
    with LoopbackServer(Script.parse([{"fault": "reset"}, {"fault": "truncated"}, TURN])) as server:
        assert raw_post(server, "/v1/chat/completions") in (b"", b"<RST>")
        truncated = raw_post(server, "/v1/chat/completions")
        head, _, body = truncated.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < length
        assert server.remaining == 1


def test_slow_delays_the_next_entry_in_the_same_request():
    with LoopbackServer(Script.parse([{"fault": "slow", "delay": 0.2}, TURN])) as server:
        t0 = time.monotonic()
        code, _, body = post(server, "/v1/chat/completions", CHAT_BODY)
        assert body["choices"][0]["message"]["content"] == "Looking."
        assert code == 200 and time.monotonic() - t0 >= 0.2 and server.remaining == 0
        assert len(server.requests) == 1


def test_malformed_tool_json_per_format():
    entries = [{"fault": "malformed_tool_json"}, TURN, {"fault": "malformed_tool_json"}, TURN]
    with LoopbackServer(Script.parse(entries)) as server:
        code, _, body = post(server, "/v1/responses", {"model": "m", "input": "hi"})
        assert code == 200
        args = body["output"][1]["arguments"]
        with pytest.raises(json.JSONDecodeError):
            json.loads(args)
        assert server.remaining == 2
        # Anthropic's tool input is an object, so the whole body is broken instead and the turn is kept
        raw = raw_post(server, "/v1/messages")
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw.partition(b"\r\n\r\n")[2])
        assert server.remaining == 1


@pytest.mark.parametrize("path, body", [
    ("/v1/messages", {"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c",
                                      "content": [{"type": "text", "text": "3 FAILED"}]},
                                     {"type": "text", "text": "note"}]}]}),
    ("/v1/chat/completions", {"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "3 FAILED"}, {"role": "user", "content": "note"}]}),
    ("/v1/responses", {"input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "3 FAILED"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "note"}]}]}),
])
def test_expect_reads_the_last_user_turn_in_every_format(path, body):
    fmt = {"/v1/messages": "anthropic", "/v1/chat/completions": "chat", "/v1/responses": "responses"}[path]
    seen = last_user_text(fmt, body)
    assert "3 FAILED" in seen and "note" in seen and "go" not in seen
    script = Script.parse([{"text": "ok", "expect": "FAILED"}, {"text": "no", "expect": "PASSED"}])
    with LoopbackServer(script) as server:
        assert post(server, path, {"model": "m", **body})[0] == 200
        code, _, err = post(server, path, {"model": "m", **body})
        assert code == 400 and "scripted turn 2 expects 'PASSED'" in json.dumps(err)
        code, _, err = post(server, path, {"model": "m", **body})
        assert code == 400 and "loopback script exhausted" in json.dumps(err)


def test_unknown_path_is_a_404():
    with LoopbackServer(Script.parse([TURN])) as server:
        assert post(server, "/v2/other", {})[0] == 404
        assert server.remaining == 1


def test_loopback_command_serves_a_script_to_any_client(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"turns": [TURN]}))
    proc = subprocess.Popen([sys.executable, "-m", "loopwright.harness.loopback", "--script",
                             str(tmp_path / "s.json")], stdout=subprocess.PIPE, text=True)
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        assert "not a model" in banner[0] and "anthropic base_url: http://127.0.0.1:" in banner[1]
        base = banner[2].split()[-1]
        client = openai.OpenAI(api_key="test-not-a-key", base_url=base, max_retries=0)
        resp = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.tool_calls[0].function.name == "read_file"
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _options(*command: str) -> set[str]:
    help_text = subprocess.run([sys.executable, "-m", *command, "--help"], capture_output=True, text=True,
                               check=True).stdout
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text))


def test_loopwright_loopback_has_the_options_of_the_module_and_logs_requests(tmp_path):
    module = _options("loopwright.harness.loopback")
    assert {"--script", "--port", "--per-conversation", "--latency", "--log-requests"} <= module
    assert _options("loopwright.cli.main", "loopback") == module
    (tmp_path / "s.json").write_text(json.dumps({"turns": [TURN]}))
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "loopwright.cli.main", "loopback", "--script",
                             str(tmp_path / "s.json"), "--log-requests", str(log)], stdout=subprocess.PIPE, text=True)
    try:
        base = [proc.stdout.readline() for _ in range(3)][2].split()[-1]
        client = openai.OpenAI(api_key="test-not-a-key", base_url=base, max_retries=0)
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hello there"}])
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["path"], r["turn"], r["head"]) for r in lines] == [("/v1/chat/completions", 0, "hello there")]


def test_loopback_command_reports_a_bad_script_in_one_line(tmp_path, capsys):
    assert main(["--script", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "bad.json").write_text('{"turns": [{"fault": "418"}]}')
    assert main(["--script", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "script file not found" in err[0] and "turns.0" in err[1]


def test_per_conversation_mode_answers_each_conversation_from_its_own_position():
    turns = [{"text": f"turn {i}"} for i in range(3)]
    with LoopbackServer(Script.parse(turns), per_conversation=True) as server:
        first = {"role": "user", "content": "hi"}
        again = [first, {"role": "assistant", "content": "turn 0"}, {"role": "user", "content": "go on"}]
        for _ in range(2):  # two conversations at the same point get the same turn
            assert post(server, "/v1/chat/completions", {"model": "m", "messages": [first]})[2][
                "choices"][0]["message"]["content"] == "turn 0"
        assert post(server, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": again})[2][
            "content"][0]["text"] == "turn 1"
        responses = [{"role": "user", "content": "hi"}, {"type": "function_call", "call_id": "a", "name": "x",
                                                           "arguments": "{}"},
                     {"type": "function_call", "call_id": "b", "name": "x", "arguments": "{}"},
                     {"type": "function_call_output", "call_id": "a", "output": "ok"}]
        assert post(server, "/v1/responses", {"model": "m", "input": responses})[2]["output"][0][
            "content"][0]["text"] == "turn 1"
        over = again + [{"role": "assistant", "content": "1"}, {"role": "user", "content": "."},
                        {"role": "assistant", "content": "2"}, {"role": "user", "content": "."}]
        code, _, body = post(server, "/v1/chat/completions", {"model": "m", "messages": over})
        assert code == 400 and "asks for turn 4 but the script has 3" in body["error"]["message"]
    with pytest.raises(Exception, match="cannot hold faults"):
        LoopbackServer(Script.parse([{"fault": "429"}]), per_conversation=True)


def test_latency_and_a_quota_storm_with_reset_headers():
    with LoopbackServer(Script.parse([TURN]), latency=0.3) as server:
        server.rate_limit(5)
        t0 = time.monotonic()
        code, headers, _ = post(server, "/v1/messages", ANTHROPIC_BODY)
        assert time.monotonic() - t0 >= 0.3
        assert code == 429 and headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert headers["anthropic-ratelimit-requests-reset"].endswith("Z") and "retry-after" not in headers
        code, headers, _ = post(server, "/v1/chat/completions", CHAT_BODY)
        assert code == 429 and 4 < float(headers["x-ratelimit-reset-requests"].rstrip("s")) <= 5
        assert len(server.refused) == 2 and server.remaining == 1
        server.rate_limit(0)
        assert post(server, "/v1/messages", ANTHROPIC_BODY)[0] == 200


BIG = "Inspect before you change things. " * 200  # ~1,700 tokens: over the 1,024-token minimum, under Haiku's 2,048
MARK = {"type": "ephemeral"}


def _anthropic(model: str, turns: int, *, ttl: str | None = None, marked: bool = True) -> dict:
    """A Messages body of `turns` user/assistant rounds, breakpoints on the system prompt and the last message."""
    mark = {**MARK, "ttl": ttl} if ttl else MARK
    messages: list[dict] = []
    for i in range(turns):
        messages += [{"role": "user", "content": [{"type": "text", "text": f"result {i} " + "x" * 400}]},
                     {"role": "assistant", "content": [{"type": "text", "text": f"step {i}"}]}]
    messages.append({"role": "user", "content": [{"type": "text", "text": f"result {turns} " + "x" * 400,
                                                  **({"cache_control": mark} if marked else {})}]})
    system = [{"type": "text", "text": BIG, **({"cache_control": mark} if marked else {})}]
    return {"model": model, "max_tokens": 10, "system": system, "messages": messages}


def test_anthropic_cache_reads_what_the_previous_request_wrote_within_its_ttl():
    with LoopbackServer(Script.parse([TURN] * 6)) as server:
        now = [1000.0]
        server.prompt_cache.clock = lambda: now[0]
        first = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 0))[2]["usage"]
        second = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 1))[2]["usage"]
        now[0] += 299  # 5 minutes after the write, less a second: a hit (which renews it)
        third = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 2))[2]["usage"]
        now[0] += 301
        expired = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 3))[2]["usage"]
        unmarked = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 3, marked=False))[2]["usage"]
        haiku = post(server, "/v1/messages", _anthropic("claude-haiku-4-5", 0))[2]["usage"]
    # nothing cached yet: everything up to the last breakpoint is written, the rest is plain input
    assert first["cache_read_input_tokens"] == 0 and first["cache_creation_input_tokens"] > 1024
    # the next turn reads the whole prefix the first wrote (found within 20 blocks of its breakpoint)
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] > 100 and second["input_tokens"] == 0
    assert third["cache_read_input_tokens"] == second["cache_read_input_tokens"] + second["cache_creation_input_tokens"]
    assert expired["cache_read_input_tokens"] == 0  # 5m after the last hit: gone
    assert unmarked["cache_read_input_tokens"] == unmarked["cache_creation_input_tokens"] == 0  # nothing marked
    assert haiku["cache_creation_input_tokens"] == 0 and haiku["input_tokens"] > 1024  # under Haiku's minimum


def test_anthropic_one_hour_breakpoints_are_written_as_such_and_outlive_five_minutes():
    with LoopbackServer(Script.parse([TURN] * 2)) as server:
        now = [1000.0]
        server.prompt_cache.clock = lambda: now[0]
        first = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 0, ttl="1h"))[2]["usage"]
        now[0] += 1800
        later = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 1, ttl="1h"))[2]["usage"]
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": 0,
                                       "ephemeral_1h_input_tokens": first["cache_creation_input_tokens"]}
    assert later["cache_read_input_tokens"] == first["cache_creation_input_tokens"]


def test_openai_caches_prefixes_of_1024_tokens_in_128_token_steps_per_cache_key():
    def chat(turns: int, key: str | None) -> dict:
        messages = [{"role": "system", "content": BIG}]
        for i in range(turns):
            messages += [{"role": "user", "content": f"result {i} " + "x" * 400},
                         {"role": "assistant", "content": f"step {i}"}]
        body = {"model": "gpt-5.1", "messages": [*messages, {"role": "user", "content": "go on"}]}
        return {**body, "prompt_cache_key": key} if key else body

    with LoopbackServer(Script.parse([TURN] * 5)) as server:
        first = post(server, "/v1/chat/completions", chat(0, "run-a"))[2]["usage"]
        second = post(server, "/v1/chat/completions", chat(1, "run-a"))[2]["usage"]
        other = post(server, "/v1/chat/completions", chat(1, "run-b"))[2]["usage"]
        small = {"model": "gpt-5.1", "messages": [{"role": "user", "content": "hi " * 1000}]}
        post(server, "/v1/chat/completions", small)
        again = post(server, "/v1/chat/completions", small)[2]["usage"]
    assert first["prompt_tokens_details"]["cached_tokens"] == 0 and first["prompt_tokens"] > 1024
    cached = second["prompt_tokens_details"]["cached_tokens"]  # the system prompt they share, in 128-token steps
    assert cached % 128 == 0 and len(BIG) // 4 - 128 < cached <= len(BIG) // 4 + 16
    assert other["prompt_tokens_details"]["cached_tokens"] == 0  # another run's key: another cache
    assert again["prompt_tokens_details"]["cached_tokens"] == 0 < again["prompt_tokens"] < 1024  # too short


def test_without_accounting_a_turn_reports_the_scripts_usage():
    with LoopbackServer(Script.parse([TURN]), accounting=False) as server:
        usage = post(server, "/v1/messages", _anthropic("claude-sonnet-4-6", 3))[2]["usage"]
    billed = (usage["input_tokens"], usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"])
    assert billed == (100, 0, 0)


def stream_post(server: LoopbackServer, path: str, body: dict) -> tuple[str, list[tuple[str, str]]]:
    """A streamed request: (content type, [(event name, data)]) as a plain client reads them."""
    req = urllib.request.Request(server.base_url + path, data=json.dumps({**body, "stream": True}).encode(),
                                 method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
        kind = resp.headers["content-type"]
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines.get("event", ""), lines["data"]))
    return kind, events


def test_a_streamed_request_gets_the_events_each_api_sends():
    with LoopbackServer(Script.parse([TURN] * 3)) as server:
        anth = stream_post(server, "/v1/messages", ANTHROPIC_BODY)
        chat = stream_post(server, "/v1/chat/completions", {**CHAT_BODY, "stream_options": {"include_usage": True}})
        resp = stream_post(server, "/v1/responses", {"model": "m", "input": "hi"})
    assert {anth[0], chat[0], resp[0]} == {"text/event-stream"}
    names = [name for name, _ in anth[1]]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    deltas = [json.loads(data)["delta"] for name, data in anth[1] if name == "content_block_delta"]
    assert [d.get("text") or d.get("partial_json") for d in deltas] == ["Looking.", '{"path": "a.py"}']
    chunks = [json.loads(data) for _, data in chat[1][:-1]]
    assert chat[1][-1] == ("", "[DONE]") and chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    names = [name for name, _ in resp[1]]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    final = json.loads(resp[1][-1][1])["response"]
    assert [o["type"] for o in final["output"]] == ["message", "function_call"] and final["usage"]["output_tokens"]


def test_stream_faults_need_a_streamed_request():
    with LoopbackServer(Script.parse([{"fault": "cut"}, TURN])) as server:
        status, _, body = post(server, "/v1/chat/completions", CHAT_BODY)
    assert status == 400 and "streamed request" in body["error"]["message"]


def test_tool_calls_take_the_shape_the_request_declares_their_tools_in_and_their_output_is_what_expect_reads():
    patch = "*** Begin Patch\n*** Add File: b.py\n+x = 1\n*** End Patch\n"
    script = Script.parse([{"tool_calls": [{"name": "apply_patch", "raw_arguments": patch},
                                           {"name": "mcp__docs.search", "arguments": {"q": "add"}},
                                           {"name": "shell", "arguments": {"cmd": "ls"}}]}] * 2
                          + [{"text": "ok", "expect": "Success"}])
    tools = [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
             {"type": "namespace", "name": "mcp__docs", "tools": [{"type": "function", "name": "search"}]},
             {"type": "function", "name": "shell", "parameters": {}}]
    with LoopbackServer(script) as server:
        whole = post(server, "/v1/responses", {"model": "m", "input": "hi", "tools": tools})[2]
        _, streamed = stream_post(server, "/v1/responses", {"model": "m", "input": "hi", "tools": tools})
        history = [{"role": "user", "content": "hi"}, *whole["output"],
                   {"type": "custom_tool_call_output", "call_id": whole["output"][0]["call_id"], "output": "Success."},
                   {"type": "function_call_output", "call_id": whole["output"][1]["call_id"], "output": "found"},
                   {"type": "function_call_output", "call_id": whole["output"][2]["call_id"], "output": "b.py"}]
        assert post(server, "/v1/responses", {"model": "m", "input": history, "tools": tools})[0] == 200
    assert [(o["type"], o.get("namespace"), o["name"], o.get("input")) for o in whole["output"]] == [
        ("custom_tool_call", None, "apply_patch", patch), ("function_call", "mcp__docs", "search", None),
        ("function_call", None, "shell", None)]
    deltas = [json.loads(data)["delta"] for name, data in streamed if name == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == patch
    assert json.loads(streamed[-1][1])["response"]["output"][0]["type"] == "custom_tool_call"


def test_a_codex_request_that_is_not_a_turn_is_a_side_request():
    def meta(kind: str) -> dict:
        return {"client_metadata": {"x-codex-turn-metadata": json.dumps({"request_kind": kind})}}

    with LoopbackServer(Script.parse([TURN])) as server:
        code, _, body = post(server, "/v1/responses", {"model": "m", "input": "summarize", **meta("compaction")})
        assert code == 200 and "a side request" in body["output"][0]["content"][0]["text"]
        assert server.remaining == 1 and server.side_requests == ["compaction"]
        assert post(server, "/v1/responses", {"model": "m", "input": "go", **meta("turn")})[2]["output"][1]["name"] \
            == "read_file"
        assert server.remaining == 0


def test_a_reasoning_summary_comes_before_the_answer_in_the_responses_format_only():
    turn = {"reasoning": "Thinking it over.", "text": "Answer."}
    with LoopbackServer(Script.parse([turn] * 3)) as server:
        whole = post(server, "/v1/responses", {"model": "m", "input": "hi"})[2]
        _, streamed = stream_post(server, "/v1/responses", {"model": "m", "input": "hi"})
        chat = post(server, "/v1/chat/completions", CHAT_BODY)[2]
    assert [o["type"] for o in whole["output"]] == ["reasoning", "message"]
    assert whole["output"][0]["summary"] == [{"type": "summary_text", "text": "Thinking it over."}]
    deltas = [json.loads(d)["delta"] for n, d in streamed if n == "response.reasoning_summary_text.delta"]
    assert deltas == ["Thinking it over."]
    assert [o["type"] for o in json.loads(streamed[-1][1])["response"]["output"]] == ["reasoning", "message"]
    assert chat["choices"][0]["message"]["content"] == "Answer."


def test_claude_codes_side_requests_take_no_turn_and_are_logged(tmp_path):
    """A request from Claude Code (User-Agent claude-cli/...) that offers no tools is a side request (a session
    title, a quota check): answered with placeholders (JSON by its schema when it asks for one), listed, logged."""
    title = {**ANTHROPIC_BODY, "system": [{"type": "text", "text": "You are a Claude agent."},
                                          {"type": "text", "text": "Generate a concise title.\nRules: ..."}],
             "output_config": {"format": {"type": "json_schema", "schema": {
                 "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}}}
    quota = {**ANTHROPIC_BODY, "max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]}
    agent_turn = {**ANTHROPIC_BODY, "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}
    log = tmp_path / "requests.jsonl"
    with LoopbackServer(Script.parse([TURN, TURN]), request_log=str(log)) as server:
        def send(body: dict, agent: str = "claude-cli/2.1.197 (external, sdk-cli)") -> dict:
            req = urllib.request.Request(server.base_url + "/v1/messages?beta=true", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json", "user-agent": agent})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())

        answers = [send(title), send(quota)]
        assert server.remaining == 2
        assert send(agent_turn)["content"][1]["name"] == "read_file"
        assert send(quota, agent="python-httpx/0.28")["content"][1]["name"] == "read_file", "only Claude Code's"
        assert server.remaining == 0 and server.side_requests == ["Generate a concise title.", "quota"]
        assert [r.get("side") for r in server.requests] == ["Generate a concise title.", "quota", None, None]
    assert json.loads(answers[0]["content"][0]["text"]) == {"title": "loopback"}
    assert "side request" in answers[1]["content"][0]["text"]
    assert [json.loads(line).get("side") for line in log.read_text().splitlines()] == [
        "Generate a concise title.", "quota", None, None]


def test_a_request_sent_through_an_http_proxy_names_the_absolute_url():
    """Through a proxy (the sandbox's) the request line carries the whole URL; it is the same endpoint."""
    with LoopbackServer(Script.parse([TURN])) as server:
        assert raw_post(server, server.base_url + "/v1/messages?beta=true").startswith(b"HTTP/1.1 200")
        assert [r["path"] for r in server.requests] == ["/v1/messages"]

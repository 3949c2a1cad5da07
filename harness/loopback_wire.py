"""What the provider APIs send and receive, as the loopback server speaks it: reading a request (its turns and
user texts) and rendering a scripted turn as each API's response body or server-sent-event stream.
"""

from __future__ import annotations

import json
import time

from loopwright.harness.messages import TextBlock, ToolCall, Usage
from loopwright.harness.script import ScriptTurn

BROKEN_JSON = '{"path": "unterminated'


def assistant_turns(fmt: str, body: dict) -> int:
    """How many assistant turns the request's conversation already holds."""
    if fmt in ("anthropic", "chat"):
        return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")
    turns, inside = 0, False
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        mine = _assistant_item(item)
        turns += mine and not inside
        inside = mine
    return turns


def _assistant_item(item: dict) -> bool:
    """Whether a Responses input item is the assistant's: a message, a reasoning item or a tool call (a function's,
    or a freeform tool's, as Codex sends back its apply_patch calls)."""
    return item.get("role") == "assistant" or item.get("type") in ("function_call", "custom_tool_call", "reasoning")


def first_user_text(fmt: str, body: dict) -> str:
    """The text of the conversation's first user message (names the conversation, e.g. its task)."""
    items = body.get("messages") if fmt in ("anthropic", "chat") else body.get("input")
    if isinstance(items, str):
        return items
    for m in items if isinstance(items, list) else []:
        if m.get("role") == "user":
            content = m.get("content") or ""
            return content if isinstance(content, str) else " ".join(
                c.get("text", "") for c in content if isinstance(c, dict) and isinstance(c.get("text"), str))
    return ""


def last_user_text(fmt: str, body: dict) -> str:
    """The text of what the client sent since the assistant's last turn: tool results and user text."""
    parts: list[str] = []
    if fmt == "anthropic":
        msgs = body.get("messages") or []
        last = msgs[-1] if msgs else {}
        content = last.get("content", "")
        for block in [content] if isinstance(content, str) else content:
            if isinstance(block, str):
                parts.append(block)
            elif block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif block.get("type") == "tool_result":
                inner = block.get("content", "")
                parts.append(inner if isinstance(inner, str) else
                             " ".join(b.get("text", "") for b in inner if isinstance(b, dict)))
    elif fmt == "chat":
        for m in reversed(body.get("messages") or []):
            if m.get("role") == "assistant":
                break
            content = m.get("content") or ""
            parts.insert(0, content if isinstance(content, str) else
                         " ".join(c.get("text", "") for c in content if isinstance(c, dict)))
    else:
        items = body.get("input") or []
        for item in reversed(items if isinstance(items, list) else [{"type": "message", "content": items}]):
            if _assistant_item(item):
                break
            if item.get("type") in ("function_call_output", "custom_tool_call_output"):
                parts.insert(0, str(item.get("output", "")))
            else:
                content = item.get("content", "")
                parts.insert(0, content if isinstance(content, str) else
                             " ".join(c.get("text", "") for c in content if isinstance(c, dict)))
    return "\n".join(parts)


def side_request(user_agent: str, body: dict) -> str | None:
    """What a Claude Code side request is for (a session title, a quota check, a command's prefix...): the first
    line of its instructions (its last system block, else its user text); None for any other request. Claude
    Code (User-Agent `claude-cli/...`) offers the agent's tools with every turn of the agent; the requests it
    makes besides the turns offer none."""
    if not user_agent.startswith("claude-cli/") or body.get("tools"):
        return None
    system = body.get("system") or ""
    blocks = [system] if isinstance(system, str) else [b.get("text", "") for b in system if isinstance(b, dict)]
    own = next((b.strip() for b in reversed(blocks) if b.strip()), "") or first_user_text("anthropic", body).strip()
    return own.splitlines()[0][:80] if own else "(no instructions)"


def side_answer(body: dict) -> str:
    """A side request's answer: an object of placeholder values when it asks for JSON by a schema (a session
    title does), else a line saying what answered."""
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") != "json_schema":
        return "loopback: a side request, answered apart from the script"
    schema = fmt.get("schema") or {}
    placeholders = {"string": "loopback", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
    return json.dumps({name: placeholders.get((schema.get("properties") or {}).get(name, {}).get("type"), None)
                       for name in schema.get("required") or []})


def render(fmt: str, turn: ScriptTurn, index: int, model: str, broken_args: bool = False, empty: bool = False,
           usage: Usage | None = None) -> dict:
    """A scripted turn as a provider response body (with `usage`, or the turn's own; `empty`: with no content
    blocks, choices or output items)."""
    resp = turn.response(index, model)
    text = "" if empty else "".join(b.text for b in resp.message.content if isinstance(b, TextBlock))
    calls = [(b, raw.raw_arguments) for b, raw in zip(resp.message.tool_calls, turn.tool_calls, strict=True)]
    u = usage or resp.usage

    def args_json(call: ToolCall, raw: str | None) -> str:
        return BROKEN_JSON if broken_args else raw if raw is not None else json.dumps(call.arguments)

    if fmt == "anthropic":
        content: list[dict] = [{"type": "text", "text": text}] if text else []
        # a streamed tool input arrives as JSON text, which can be broken (a string here: render_stream sends it)
        content += [{"type": "tool_use", "id": c.id, "name": c.name,
                     "input": BROKEN_JSON if broken_args else c.arguments} for c, _ in calls]
        return {"id": f"msg_loopback_{index}", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": resp.stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                          "cache_read_input_tokens": u.cache_read_tokens,
                          "cache_creation_input_tokens": u.cache_write_tokens,
                          "cache_creation": {
                              "ephemeral_5m_input_tokens": u.cache_write_tokens - u.cache_write_1h_tokens,
                              "ephemeral_1h_input_tokens": u.cache_write_1h_tokens}}}
    if fmt == "chat":
        finish = {"tool_use": "tool_calls", "max_tokens": "length"}.get(resp.stop_reason, "stop")
        message: dict = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": args_json(c, raw)}} for c, raw in calls]
        choices = [] if empty else [{"index": 0, "message": message, "finish_reason": finish}]
        return {"id": f"chatcmpl-loopback-{index}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": choices,
                "usage": {"prompt_tokens": u.input_tokens + u.cache_read_tokens, "completion_tokens": u.output_tokens,
                          "total_tokens": u.input_tokens + u.cache_read_tokens + u.output_tokens,
                          "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens}}}
    output: list[dict] = []
    if turn.reasoning and not empty:
        output.append({"type": "reasoning", "id": f"rs_loopback_{index}", "encrypted_content": None,
                       "summary": [{"type": "summary_text", "text": turn.reasoning}]})
    if text:
        output.append({"type": "message", "id": f"msg_loopback_{index}", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    output += [{"type": "function_call", "id": f"fc_loopback_{index}_{j}", "call_id": c.id, "name": c.name,
                "arguments": args_json(c, raw), "status": "completed"} for j, (c, raw) in enumerate(calls)]
    incomplete = {"reason": "max_output_tokens"} if resp.stop_reason == "max_tokens" else None
    return {"id": f"resp_loopback_{index}", "object": "response", "created_at": int(time.time()), "model": model,
            "status": "incomplete" if incomplete else "completed", "incomplete_details": incomplete, "output": output,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": u.input_tokens + u.cache_read_tokens, "output_tokens": u.output_tokens,
                      "total_tokens": u.input_tokens + u.cache_read_tokens + u.output_tokens,
                      "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


def declared_calls(payload: dict, body: dict) -> dict:
    """A rendered Responses answer whose tool calls take the shape the request declares their tools in: a call of
    a freeform (`custom`) tool, as Codex's apply_patch, is a `custom_tool_call` whose input is the call's arguments
    text (a script gives it as `raw_arguments`); a call named `NS.name`, of a function in the request's namespace
    NS (as Codex groups an MCP server's tools: `mcp__docs.search`), is a `function_call` of `name` in `namespace`."""
    freeform: set[str] = set()
    spaced: set[str] = set()
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "custom":
            freeform.add(str(tool.get("name")))
        elif tool.get("type") == "namespace":
            spaced |= {f"{tool.get('name')}.{f.get('name')}" for f in tool.get("tools") or [] if isinstance(f, dict)}
    output = []
    for item in payload["output"]:
        if item["type"] == "function_call" and item["name"] in freeform:
            item = {"type": "custom_tool_call", "id": item["id"].replace("fc_", "ctc_", 1), "call_id": item["call_id"],
                    "name": item["name"], "input": item["arguments"], "status": "completed"}
        elif item["type"] == "function_call" and item["name"] in spaced:
            namespace, name = item["name"].split(".", 1)
            item = {**item, "name": name, "namespace": namespace}
        output.append(item)
    payload["output"] = output
    return payload


def codex_request_kind(body: dict) -> str | None:
    """What a Codex Responses request is for when it is not one of the agent's turns (`compaction`), as Codex says
    in its `client_metadata` (`request_kind` of `x-codex-turn-metadata`); None for a turn or any other request."""
    try:
        kind = json.loads((body.get("client_metadata") or {})["x-codex-turn-metadata"]).get("request_kind")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) and kind != "turn" else None


DELTA_CHARS = 200  # text and tool arguments go out in deltas of this many characters


def _pieces(text: str) -> list[str]:
    return [text[i:i + DELTA_CHARS] for i in range(0, len(text), DELTA_CHARS)] or [""]


def sse(name: str | None, data: dict | str) -> bytes:
    line = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {name}\ndata: {line}\n\n" if name else f"data: {line}\n\n").encode()


def render_stream(fmt: str, payload: dict, usage_chunk: bool = True) -> list[bytes]:
    """A rendered answer (`render`) as the server-sent events the provider streams it in, one bytes per event.

    Anthropic: message_start, per block content_block_start / _delta / _stop, message_delta, message_stop;
    Chat: chunks of deltas, the finish chunk, a usage chunk when asked (`stream_options`), then [DONE];
    Responses: response.created, per item output_item.added / deltas / output_item.done, response.completed."""
    if fmt == "anthropic":
        usage = payload["usage"]
        start = {**payload, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}
        events = [sse("message_start", {"type": "message_start", "message": start}),
                  sse("ping", {"type": "ping"})]
        for i, block in enumerate(payload["content"]):
            if block["type"] == "text":
                opened: dict = {"type": "text", "text": ""}
                deltas: list[dict] = [
                    {"type": "text_delta", "text": t} for t in _pieces(block["text"])]
            else:
                raw = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
                opened = {**block, "input": {}}
                deltas = [
                    {"type": "input_json_delta", "partial_json": t} for t in _pieces(raw)]
            events.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": opened}))
            events += [sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
                       for d in deltas]
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(sse("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": payload["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]}}))
        return [*events, sse("message_stop", {"type": "message_stop"})]
    if fmt == "chat":
        head = {k: payload[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        if not payload["choices"]:  # the "empty" fault: a stream with no choices at all
            return [sse(None, {**head, "choices": [], "usage": payload["usage"]}), sse(None, "[DONE]")]
        choice = payload["choices"][0]
        message = choice["message"]

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return sse(None, {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": t}) for t in _pieces(message["content"])] if message["content"] else []
        for j, call in enumerate(message.get("tool_calls") or []):
            events.append(chunk({"tool_calls": [{"index": j, "id": call["id"], "type": "function",
                                                 "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": j, "function": {"arguments": t}}]})
                       for t in _pieces(call["function"]["arguments"])]
        events.append(chunk({}, choice["finish_reason"]))
        if usage_chunk:
            events.append(sse(None, {**head, "choices": [], "usage": payload["usage"]}))
        return [*events, sse(None, "[DONE]")]
    seq = iter(range(1 << 30))
    created = {**payload, "status": "in_progress", "output": [], "usage": None}
    stream = [sse("response.created", {"type": "response.created", "sequence_number": next(seq),
                                        "response": created})]
    for i, item in enumerate(payload["output"]):
        if item["type"] == "message":
            text = "".join(p.get("text", "") for p in item["content"])
            added: dict = {**item, "status": "in_progress", "content": []}
            items: list[tuple[str, dict]] = [
                ("response.output_text.delta", {"item_id": item["id"], "content_index": 0, "delta": t})
                for t in _pieces(text)]
        elif item["type"] == "reasoning":
            added = {**item, "summary": []}
            items = [("response.reasoning_summary_part.added", {"item_id": item["id"], "summary_index": 0,
                                                                 "part": {"type": "summary_text", "text": ""}})]
            items += [("response.reasoning_summary_text.delta", {"item_id": item["id"], "summary_index": 0,
                                                                  "delta": t})
                      for t in _pieces(item["summary"][0]["text"])]
        elif item["type"] == "custom_tool_call":
            added = {**item, "status": "in_progress", "input": ""}
            items = [("response.custom_tool_call_input.delta", {"item_id": item["id"], "delta": t})
                     for t in _pieces(item["input"])]
        else:
            added = {**item, "status": "in_progress", "arguments": ""}
            items = [("response.function_call_arguments.delta", {"item_id": item["id"], "delta": t})
                     for t in _pieces(item["arguments"])]
        stream.append(sse("response.output_item.added", {"type": "response.output_item.added",
                                                          "sequence_number": next(seq), "output_index": i,
                                                          "item": added}))
        stream += [sse(name, {"type": name, "sequence_number": next(seq), "output_index": i, **d})
                   for name, d in items]
        stream.append(sse("response.output_item.done", {"type": "response.output_item.done",
                                                         "sequence_number": next(seq), "output_index": i,
                                                         "item": item}))
    final = "response.incomplete" if payload["status"] == "incomplete" else "response.completed"
    return [*stream, sse(final, {"type": final, "sequence_number": next(seq), "response": payload})]

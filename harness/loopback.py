"""A loopback HTTP server that speaks the Anthropic Messages and OpenAI Chat/Responses wire formats.

It replays a `Script` (harness/script.py): each HTTP request consumes the next
entry. A turn is rendered in the format of the endpoint that was hit; a fault
entry breaks that one request instead:

- "429" (with retry-after, or with `reset_after` only the provider's rate-limit reset header), "500", "529"
  (Anthropic's overloaded_error), "401";
- "billing": OpenAI's 429 `insufficient_quota`, Anthropic's 400 "credit balance is too low";
- "context_overflow": a 400 as each API says it: Anthropic's "prompt is too long", OpenAI's
  `context_length_exceeded`;
- "empty": a 200 with no content blocks, no choices or no output items;
- "reset": the connection is closed abruptly (TCP RST), no response;
- "slow": wait `delay` seconds, then serve the next entry in the same request
  (if the client hangs up first, a timeout, the next entry is left for its retry);
- "truncated": a Content-Length for the whole body, half of it sent, then close;
- "stall", "cut", "trickle" (for a streamed request, see below): the next turn's
  stream stops halfway for `delay` seconds, or is cut in the middle of an event
  (the connection closes), or goes out one byte every `delay` seconds; a turn
  not delivered whole is left for the retry;
- "malformed_tool_json": OpenAI formats get the next turn with tool-call
  arguments that are not valid JSON (the turn is used up; the agent sees an
  error result). Anthropic's tool input is a JSON object, so there the whole
  body is invalid JSON instead, and the next turn is left for the retry (a
  streamed Anthropic answer gets broken `partial_json`, like OpenAI's).

A request with `"stream": true` is answered with server-sent events as the
provider streams them (`render_stream`), in chunked transfer encoding.

A mismatched `expect` or an exhausted script is answered with HTTP 400 naming
the problem: loud, and never retried.

Two switches serve fleets: `per_conversation` answers each request with the
turn whose number is the count of assistant turns already in its
conversation, so any number of concurrent runs replay one script (faults are
not allowed then); `latency` delays every answer. `rate_limit(seconds)` starts
a quota storm: every request is refused with 429 until it ends, carrying the
provider's rate-limit reset headers (and `retry-after` only when asked).
`request_log` (`--log-requests FILE`) appends one JSON line per request as it
arrives, before any latency: `at` (unix time), `path`, `turn` (assistant turns
already in its conversation) and `head` (the first 80 characters of its first
user message), so another process (a benchmark) sees when each conversation
called. Reflection calls (their system prompt carries `REFLECTION_MARKER`) are
answered from the script's `reflections`, apart from the turns; with none left
they get a 400. Claude Code's side requests (a session title, a quota check...: a request from `claude-cli`
that offers no tools) are answered apart from the turns too, with placeholders, and kept in `side_requests`
(and `side` in the request log). Use it as a context manager in tests, or `loopwright loopback --script
FILE` (the same as `python -m loopwright.harness.loopback`: one set of options,
`add_arguments`) to point your own client at it. It is not a model and says so.

Usage: a turn that gives no `usage` is billed as the provider would bill its request, prompt caching included
(`harness.prompt_cache`: cache_control breakpoints and TTLs for Anthropic, automatic 1,024-token prefixes per
`prompt_cache_key` for OpenAI); that serialises each request again, so CPU benchmarks switch it off
(`accounting=False`, `--no-accounting`: such turns report the script's default usage). A Responses request with
`store` is kept, so a later one may send only its new items with `previous_response_id` (an unknown id is a 404,
as when a stored response expired). A Responses request gets its tool calls in the shape it declares the tools in
(`declared_calls`): Codex's apply_patch is a freeform tool, called with the call's `raw_arguments` as its input; its
MCP tools are functions in a namespace, called by a script as `mcp__server.tool`. Codex's requests besides its turns
(a compaction: it says what each request is for in its `client_metadata`) are side requests too. `refuse_fields`
(`--refuse-fields`) answers a request that has one of those top-level fields with a 400 naming it, as a strict
OpenAI-compatible server (llama.cpp, vLLM) does with fields it does not know.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from loopwright.harness.loopback_wire import (
    assistant_turns,
    codex_request_kind,
    declared_calls,
    first_user_text,
    last_user_text,
    render,
    render_stream,
    side_answer,
    side_request,
    sse,
)
from loopwright.harness.prompt_cache import PromptCache
from loopwright.harness.script import REFLECTION_MARKER, Fault, Script, ScriptError, ScriptTurn

DESCRIPTION = "serve a script over the Anthropic/OpenAI wire formats on 127.0.0.1"


class LoopbackServer:
    """Serve a script on 127.0.0.1 in a background thread."""

    def __init__(self, script: Script, host: str = "127.0.0.1", port: int = 0, *, per_conversation: bool = False,
                 latency: float = 0.0, keep_bodies: bool = True, request_log: str | None = None,
                 accounting: bool = True, refuse_fields: tuple[str, ...] = ()):
        self.entries: list[Fault | ScriptTurn] = list(script.turns)
        if per_conversation and any(isinstance(e, Fault) for e in self.entries):
            raise ScriptError("a per-conversation script cannot hold faults (use rate_limit() for a quota storm)")
        self.per_conversation, self.latency, self.keep_bodies = per_conversation, latency, keep_bodies
        self.accounting = accounting  # bill turns without `usage` as the provider would (costs CPU per request)
        self.refuse_fields = refuse_fields  # top-level body fields refused with a 400 naming the first one present
        self.requests: list[dict] = []
        self.side_requests: list[str] = []  # what each side request of Claude Code or Codex was for, in order
        self.refused: list[float] = []  # when each request of a quota storm was refused
        self._storm_until = 0.0
        self._storm_retry_after = False
        self._lock = threading.Lock()
        # line-buffered, so a reader sees each request at once; closed by stop() (or main())
        self._log = open(request_log, "a", buffering=1) if request_log else None  # noqa: SIM115
        self._next = 0
        self._turns_served = 0
        self.reflections = [script.reflection_reply(i) for i in range(len(script.reflections))]
        self._reflections_served = 0
        self.prompt_cache = PromptCache()
        self.stored: dict[str, list] = {}  # Responses stored with `store`: their whole input and output
        handler = type("Handler", (_Handler,), {"loopback": self})
        self.httpd = _Server((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self.entries) - self._next

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="loopback", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._log is not None:
            self._log.close()

    def log_request(self, path: str, fmt: str | None, body: dict, at: float, side: str | None = None) -> None:
        if self._log is None:
            return
        line = {"at": at, "path": path, "turn": assistant_turns(fmt, body) if fmt else None,
                "head": first_user_text(fmt, body)[:80] if fmt else ""} | ({"side": side} if side else {})
        with self._lock:
            self._log.write(json.dumps(line) + "\n")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rate_limit(self, seconds: float, *, retry_after: bool = False) -> None:
        """Refuse every request with 429 for `seconds` from now, like a provider whose quota ran out."""
        with self._lock:
            self._storm_until = time.time() + seconds
            self._storm_retry_after = retry_after

    def storm_left(self) -> float:
        """Seconds until the quota storm ends (0 when there is none); counts a refusal when there is one."""
        with self._lock:
            left = self._storm_until - time.time()
            if left > 0:
                self.refused.append(time.time())
            return max(0.0, left)

    def next_reflection(self) -> tuple[int, str | None]:
        """The reply to the next reflection call (they are answered apart from the turns), or None when none is left."""
        with self._lock:
            index = self._reflections_served
            self._reflections_served += 1
            return index, self.reflections[index] if index < len(self.reflections) else None

    def take(self, peek: bool = False) -> tuple[int, Fault | ScriptTurn | None]:
        """The next entry and its turn index (turns counted apart from faults)."""
        with self._lock:
            if self._next >= len(self.entries):
                return self._turns_served, None
            entry = self.entries[self._next]
            index = self._turns_served
            if not peek:
                self._next += 1
                if isinstance(entry, ScriptTurn):
                    self._turns_served += 1
            return index, entry


FORMATS = {"/v1/messages": "anthropic", "/v1/chat/completions": "chat", "/v1/responses": "responses",
           "/messages": "anthropic", "/chat/completions": "chat", "/responses": "responses"}


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a burst of new connections (a fleet's first calls) must not lose SYNs


class _Handler(BaseHTTPRequestHandler):
    loopback: LoopbackServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no ~40 ms delayed-ACK wait between them

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the connection was reset on purpose

    def do_POST(self) -> None:
        path = urlsplit(self.path).path  # a client behind an HTTP proxy sends the absolute URL (the sandbox's)
        fmt = FORMATS.get(path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        server = self.loopback
        at = time.time()
        side = (side_request(self.headers.get("user-agent", ""), body) if fmt == "anthropic" else
                codex_request_kind(body) if fmt == "responses" else None)
        server.requests.append({"path": path, "body": body if server.keep_bodies else None, "at": at}
                               | ({"side": side} if side else {}))
        if fmt == "responses" and (previous := body.get("previous_response_id")):
            if previous not in server.stored:
                return self._error(fmt, 404, "invalid_request_error",
                                   f"loopback: previous response {previous!r} not found")
            new = body.get("input")  # from here on the request is seen whole, as the provider sees it
            body = {**body, "input": server.stored[previous] + (new if isinstance(new, list) else
                                                                [{"role": "user", "content": new or ""}])}
        server.log_request(path, fmt, body, at, side)
        if fmt is None:
            return self._send(404, {"error": {"type": "not_found_error", "message": f"loopback: no endpoint {path}"}})
        if refused := next((f for f in server.refuse_fields if f in body), None):
            return self._error(fmt, 400, "invalid_request_error", f"loopback: unsupported param: {refused}")
        if server.latency and not self._linger(server.latency):
            self.close_connection = True
            return None
        if left := server.storm_left():
            return self._error(fmt, 429, "rate_limit_error", "loopback: quota exhausted (simulated storm)",
                               _reset_headers(fmt, left, server._storm_retry_after))
        if REFLECTION_MARKER in json.dumps(body):
            index, reply = server.next_reflection()
            if reply is None:
                return self._error(fmt, 400, "invalid_request_error",
                                   f"loopback: reflection call {index + 1}, but the script has "
                                   f"{len(server.reflections)} reflection replies")
            self._reply(fmt, ScriptTurn(text=reply), index, body)
            return None
        if side:
            server.side_requests.append(side)
            self._reply(fmt, ScriptTurn(text=side_answer(body)), len(server.side_requests) - 1, body)
            return None
        if server.per_conversation:
            index = assistant_turns(fmt, body)
            if index >= len(server.entries):
                return self._error(fmt, 400, "invalid_request_error",
                                   f"loopback script exhausted: the conversation asks for turn {index + 1} "
                                   f"but the script has {len(server.entries)}")
            self._turn(fmt, server.entries[index], index, body)  # type: ignore[arg-type]
            return None
        self._serve(fmt, body)

    def _serve(self, fmt: str, body: dict) -> None:
        index, entry = self.loopback.take()
        if entry is None:
            return self._error(fmt, 400, "invalid_request_error",
                               f"loopback script exhausted: the run asked for turn {index + 1} "
                               f"but the script has {index}")
        if isinstance(entry, Fault):
            return self._fault(fmt, entry, body)
        self._turn(fmt, entry, index, body)

    def _turn(self, fmt: str, turn: ScriptTurn, index: int, body: dict, broken_args: bool = False,
              fault: Fault | None = None) -> bool:
        """Answer with a scripted turn (through a stream fault, if given); False when it was not delivered whole."""
        try:
            turn = turn.played(index, json.dumps(body, ensure_ascii=False))
        except ScriptError as e:
            self._error(fmt, 400, "invalid_request_error", f"loopback: {e}")
            return False
        seen = last_user_text(fmt, body)
        if turn.expect is not None and turn.expect not in seen:
            self._error(fmt, 400, "invalid_request_error",
                        f"loopback: scripted turn {index + 1} expects {turn.expect!r} in the last message, "
                        f"got: {seen[:300]!r}")
            return False
        return self._reply(fmt, turn, index, body, broken_args, fault)

    def _reply(self, fmt: str, turn: ScriptTurn, index: int, body: dict, broken_args: bool = False,
               fault: Fault | None = None) -> bool:
        """Send a turn, billed as the provider would bill its request (unless the script gives its usage), as a
        stream when asked for one (through a stream fault, if given); a stored Responses answer is kept for
        `previous_response_id`. False when it was not delivered whole."""
        server = self.loopback
        usage = turn.usage if "usage" in turn.model_fields_set or not server.accounting else (
            server.prompt_cache.anthropic(body, turn.usage.output_tokens) if fmt == "anthropic" else
            server.prompt_cache.openai(fmt, body, turn.usage.output_tokens))
        payload = render(fmt, turn, index, body.get("model", "loopback"), broken_args, usage=usage)
        if fmt == "responses":
            payload = declared_calls(payload, body)
        if fmt == "responses" and body.get("store"):
            with server._lock:
                payload["id"] = f"resp_loopback_{index}_{len(server.stored)}"
                items = body.get("input")
                server.stored[payload["id"]] = [*(items if isinstance(items, list) else
                                                  [{"role": "user", "content": items or ""}]),
                                                *payload["output"]]
        return self._answer(fmt, payload, body, fault)

    def _answer(self, fmt: str, payload: dict, body: dict, fault: Fault | None = None) -> bool:
        """Send a rendered answer: as server-sent events when the request asked for a stream, else as JSON."""
        if body.get("stream") is not True:
            self._send(200, payload)
            return True
        events = render_stream(fmt, payload, usage_chunk=bool((body.get("stream_options") or {}).get("include_usage")))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        half = len(chunks) // 2
        try:
            if fault is None:
                self.wfile.write(b"".join(chunks) + b"0\r\n\r\n")
                return True
            if fault.fault == "trickle":
                for byte in b"".join(chunks):
                    self.wfile.write(bytes([byte]))
                    if not self._linger(fault.delay):
                        break
                else:
                    self.wfile.write(b"0\r\n\r\n")
                    return True
            elif fault.fault == "stall":
                self.wfile.write(b"".join(chunks[:half]))
                if self._linger(fault.delay):
                    self.wfile.write(b"".join(chunks[half:]) + b"0\r\n\r\n")
                    return True
            else:  # cut: the events before the middle one, half of it, and the connection closes
                event = events[half]
                self.wfile.write(b"".join(chunks[:half]) + b"%x\r\n%s" % (len(event), event[: len(event) // 2]))
        except OSError:
            pass
        self.close_connection = True
        return False

    def _fault(self, fmt: str, fault: Fault, body: dict) -> None:
        kind = fault.fault
        if kind == "429":
            after = fault.retry_after if fault.retry_after is not None else 1
            headers = ({"retry-after": f"{after:g}"} if fault.reset_after is None else
                       _reset_headers(fmt, fault.reset_after, retry_after=False, remaining=False))
            return self._error(fmt, 429, "rate_limit_error", "loopback: rate limited (scripted fault)", headers)
        if kind == "billing":
            if fmt == "anthropic":
                return self._error(fmt, 400, "invalid_request_error", "loopback: Your credit balance is too low to "
                                   "access the Anthropic API. Please go to Plans & Billing to upgrade or purchase "
                                   "credits. (scripted fault)")
            return self._error(fmt, 429, "insufficient_quota", "loopback: You exceeded your current quota, please "
                               "check your plan and billing details. (scripted fault)")
        if kind == "context_overflow":
            tokens = len(json.dumps(body)) // 4 + 200_000
            if fmt == "anthropic":
                return self._error(fmt, 400, "invalid_request_error",
                                   f"prompt is too long: {tokens} tokens > 200000 maximum")
            return self._error(fmt, 400, "invalid_request_error", "loopback: This model's maximum context length is "
                               f"200000 tokens. However, your messages resulted in {tokens} tokens.",
                               code="context_length_exceeded")
        if kind == "empty":
            self._answer(fmt, render(fmt, ScriptTurn(), 0, body.get("model", "loopback"), empty=True), body)
            return None
        if kind == "500":
            return self._error(fmt, 500, "api_error", "loopback: internal server error (scripted fault)")
        if kind == "529":
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return self._error(fmt, 529, "overloaded_error", "loopback: overloaded (scripted fault)", headers)
        if kind == "401":
            return self._error(fmt, 401, "authentication_error", "loopback: invalid x-api-key (scripted fault)")
        if kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        if kind == "truncated":
            padding = {"id": "msg_truncated", "padding": "x" * 400}
            streamed = body.get("stream") is True
            data = sse("message_start", padding) if streamed else json.dumps(padding).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream" if streamed else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        if kind == "slow":
            if not self._linger(fault.delay):
                self.close_connection = True
                return None
            return self._serve(fmt, body)
        if kind in ("stall", "cut", "trickle"):
            index, turn = self.loopback.take(peek=True)
            if not isinstance(turn, ScriptTurn) or body.get("stream") is not True:
                return self._error(fmt, 400, "invalid_request_error",
                                   f"loopback: a {kind} fault must precede a turn and meet a streamed request")
            if self._turn(fmt, turn, index, body, fault=fault):
                self.loopback.take()
            return None
        # malformed_tool_json
        if fmt == "anthropic" and body.get("stream") is not True:
            return self._send_raw(200, b'{"id": "msg_malformed", "content": [{"type": "tool_use", "input": {')
        index, turn = self.loopback.take()
        if turn is None or isinstance(turn, Fault):
            return self._error(fmt, 400, "invalid_request_error", "loopback: malformed_tool_json must precede a turn")
        self._turn(fmt, turn, index, body, broken_args=True)
        return None

    def _linger(self, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client closes the connection (it timed out)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                readable, _, _ = select.select([self.connection], [], [], left)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return False
            except OSError:
                return False
            if readable:  # bytes from a client that should be waiting: ignore them, keep the delay
                time.sleep(max(0.0, deadline - time.monotonic()))
        return True

    def _error(self, fmt: str, status: int, kind: str, message: str, headers: dict | None = None, *,
               code: str | None = None) -> None:
        if fmt == "anthropic":
            payload: dict = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {"error": {"message": message, "type": kind, "code": code or kind, "param": None}}
        self._send(status, payload, headers)

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def _reset_headers(fmt: str, left: float, retry_after: bool, remaining: bool = True) -> dict:
    """What a provider sends with a quota 429: which limit ran out (unless not `remaining`) and when it resets."""
    if fmt == "anthropic":
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + left))
        frac = f"{(time.time() + left) % 1:.3f}"[1:]
        headers = {"anthropic-ratelimit-requests-remaining": "0",
                   "anthropic-ratelimit-requests-reset": f"{when}{frac}Z"}
    else:
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": f"{left:.3f}s"}
    if not remaining:
        headers = {k: v for k, v in headers.items() if "remaining" not in k}
    if retry_after:
        headers["retry-after"] = f"{max(1, round(left))}"
    return headers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options, shared by `loopwright loopback` and `python -m loopwright.harness.loopback`."""
    parser.add_argument("--script", required=True, metavar="FILE", help="the JSON script of turns and faults to replay")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--per-conversation", action="store_true",
                        help="answer each conversation from its own position in the script (many runs at once)")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="wait before every answer")
    parser.add_argument("--log-requests", metavar="FILE",
                        help="append one JSON line per request as it arrives: at, path, turn, head")
    parser.add_argument("--refuse-fields", nargs="+", default=(), metavar="FIELD",
                        help="answer a request that has one of these body fields with a 400 naming it, as a strict "
                             "OpenAI-compatible server does (e.g. stream_options prompt_cache_key)")
    parser.add_argument("--no-accounting", dest="accounting", action="store_false",
                        help="report the script's usage instead of billing each request as the provider would "
                             "(prompt caching included): less CPU per request, for benchmarks")


def serve(args: argparse.Namespace) -> int:
    """Serve the options `add_arguments` parsed until Ctrl-C; a bad script or a taken port is one line and 2."""
    try:
        server = LoopbackServer(Script.load(args.script), port=args.port, per_conversation=args.per_conversation,
                                latency=args.latency, request_log=args.log_requests, accounting=args.accounting,
                                refuse_fields=tuple(args.refuse_fields))
    except (ScriptError, OSError) as e:  # a bad script file, or the port is taken
        print(f"loopback: {e}", file=sys.stderr)
        return 2
    print(f"scripted loopback server replaying {args.script}: it is not a model and needs no API key "
          f"(Ctrl-C to stop)", flush=True)
    print(f"  anthropic base_url: {server.anthropic_base_url}", flush=True)
    print(f"  openai base_url:    {server.openai_base_url}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        if server._log is not None:
            server._log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m loopwright.harness.loopback`, the same as `loopwright loopback`."""
    parser = argparse.ArgumentParser(prog="python -m loopwright.harness.loopback", description=DESCRIPTION)
    add_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

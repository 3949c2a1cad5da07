"""The HTTP API's routes (the contract: README "Chat over HTTP"), and the server the daemon runs them on.

Starlette and uvicorn: the small, widely used ASGI pair. The daemon is an asyncio program already, and uvicorn's
`Server` runs as one more task on its event loop (aiohttp's server would too, but Starlette's routing, request and
streaming-response pieces are what this needs and nothing more; FastAPI would bring a second way of declaring what
models.py declares). Handlers read and write the store on the event loop, between the daemon's own rounds, through
a connection of their own (so they never see a write of the daemon's half done).

Every /api request names its person by `Authorization: Bearer <token>`; the person is the author of what they post.
Errors are JSON `{"error", "hint"}` with the status that says what kind; nothing is stored when one is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from loopwright.errors import LoopwrightError
from loopwright.memory import chat as chat_rows
from loopwright.memory import stream as feed
from loopwright.memory.store import Store
from loopwright.runtime.chat import threads as chat
from loopwright.runtime.chat.bridge import BridgeError, Bridges
from loopwright.runtime.config import Config
from loopwright.runtime.http import models, page, views
from loopwright.runtime.http.auth import RateLimit, person_of
from loopwright.runtime.http.stream import Event, Hub

MAX_IDEMPOTENCY_KEY = 200


class ListenError(LoopwrightError):
    """The daemon cannot listen where [http] listen says; said in one line."""


class HttpError(Exception):
    """An answer other than success: its status, one line, and a hint."""

    def __init__(self, status: int, error: str, hint: str, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.hint, self.headers = status, error, hint, headers or {}


def _error(status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)


@dataclass
class Call:
    """One authenticated request: who, what they sent, and the API's state."""

    api: Api
    request: Request
    person: str
    body: Any

    @property
    def store(self) -> Store:
        return self.api.store


Handler = Callable[[Call], Awaitable[Any]]  # (status, JSON payload); a stream's handler: its Response


@dataclass(frozen=True)
class Spec:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    status: int = 200
    stream: bool = False


class Api:
    """The routes, over one store connection, with the daemon's config and chat bridges."""

    def __init__(self, store: Store, config: Config, say: Callable[[str], None], bridges: Bridges):
        self.store, self.config, self.say, self.bridges = store, config, say, bridges
        self.limit = RateLimit(config.http.rate_per_minute)
        self.hub = Hub(store)
        routes = [Route(s.path, self._endpoint(s), methods=[s.method]) for s in ROUTES]
        routes.append(Route("/openapi.json", self._openapi, methods=["GET"]))
        routes.append(Route("/", self._page, methods=["GET"]))
        routes.append(Route("/bridges/{name}", self._bridge, methods=["POST"]))
        self.app = Starlette(routes=routes, exception_handlers={404: self._not_found, 405: self._not_allowed})

    # -- the parts of every request ------------------------------------------------------------------------

    def _endpoint(self, spec: Spec):
        async def endpoint(request: Request) -> Response:
            try:
                person = self._authenticate(request)
                body = await self._body(request, spec.body)
                call = Call(self, request, person, body)
                if spec.stream:
                    return await spec.handler(call)
                status, payload = await spec.handler(call)
            except HttpError as e:
                return _error(e.status, e.error, e.hint, e.headers)
            except LoopwrightError as e:  # a state the store refuses (a task gone, say): said, nothing changed
                return _error(409, str(e), "look again (GET the thread or task) and retry")
            except Exception as e:  # a bug: the client gets one line, the daemon's log the traceback
                self.say(f"http: {request.method} {request.url.path} failed: {type(e).__name__}: {e}\n"
                         + traceback.format_exc())
                return _error(500, f"internal error: {type(e).__name__}", "see the daemon's log; try again")
            if spec.method != "GET":
                self.hub.wake.set()  # what it wrote goes out now, not at the next look at the feed
            return JSONResponse(payload, status_code=status)
        return endpoint

    def _authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        person = person_of(self.store, token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        key = f"person:{person}" if person else f"address:{request.client.host if request.client else '?'}"
        wait = self.limit.take(key)
        if wait:
            raise HttpError(429, "too many requests", f"wait {wait:.0f} s, then try again",
                            {"Retry-After": f"{wait:.0f}"})
        if person is None:
            where = request.client.host if request.client else "an unknown address"
            self.say(f"http: refused {request.method} {request.url.path} from {where}: "
                     f"{'no bearer token' if not token.strip() else 'unknown or revoked token'}")
            raise HttpError(401, "not signed in: the token is missing, unknown or revoked",
                            "send `Authorization: Bearer <token>`; a person gets a token from "
                            "`loopwright people add NAME` on the daemon's machine", {"WWW-Authenticate": "Bearer"})
        return person

    async def _body(self, request: Request, model: type[BaseModel] | None) -> BaseModel | None:
        if model is None:
            return None
        raw = await self._raw(request)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HttpError(400, f"the body is not valid JSON: {e}", "send a JSON object") from None
        if not isinstance(data, dict):
            shape = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}.get(type(data),
                                                                                                    "a number")
            raise HttpError(400, f"the body is {shape}, not a JSON object",
                            f"send a JSON object with {', '.join(model.model_fields)}")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "the body"
            raise HttpError(400, f"{field}: {first['msg']}",
                            f"send a JSON object with {', '.join(model.model_fields)}") from None

    async def _raw(self, request: Request) -> bytes:
        """The request's body, up to [http] max_body_bytes (413 beyond)."""
        limit = self.config.http.max_body_bytes
        too_large = HttpError(413, f"the request body is over {limit:,} bytes",
                              "send less (a message holds at most 32,000 characters); the limit is "
                              "[http] max_body_bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_large
        return bytes(raw)

    async def _bridge(self, request: Request) -> Response:
        """A bridged chat service's webhook: checked by its signature or token (runtime/chat/bridge.py), not by a
        person's token."""
        name = request.path_params["name"]
        try:
            answer = self.bridges.receive(name, request.headers, await self._raw(request))
        except HttpError as e:
            return _error(e.status, e.error, e.hint, e.headers)
        except BridgeError as e:
            return _error(e.status, e.message, e.hint)
        self.hub.wake.set()
        return JSONResponse(answer)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return _error(404, f"no such route: {request.url.path}", "see /openapi.json for the routes")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return _error(405, f"{request.method} is not allowed on {request.url.path}",
                      "see /openapi.json for the methods each route takes")

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(openapi())

    async def _page(self, request: Request) -> Response:
        body, headers = page.render(self.config.chat.name)
        return HTMLResponse(body, headers=headers)

    # -- permissions ---------------------------------------------------------------------------------------

    def admin(self, person: str) -> bool:
        return person in self.config.chat.admins

    def may_read(self, person: str, info: dict | None) -> bool:
        """A thread with an allow list is read by those it allows, its owner and the admins; any other by all."""
        if info is None or not info["allow"]:
            return True
        return person in json.loads(info["allow"]) or person == info["owner"] or self.admin(person)

    def readable_thread(self, person: str, name: str) -> dict:
        info = chat_rows.thread(self.store, name)
        if info is None:
            raise HttpError(404, f"no thread '{name}'", "GET /api/threads lists them; POST /api/threads makes one")
        if not self.may_read(person, info):
            raise HttpError(403, f"{person} is not among the people of thread '{name}'",
                            f"ask its owner ({info['owner'] or 'who made it'}) to make a thread that allows you")
        return info

    def own_message(self, person: str, message_id: int) -> chat_rows.Message:
        m = chat_rows.message(self.store, message_id)
        if m is None or m.state == chat_rows.MessageState.DELETED or \
                not self.may_read(person, chat_rows.thread(self.store, m.thread)):
            raise HttpError(404, f"no message {message_id}", "message ids are in GET /api/threads/{name}/messages")
        if m.author != person:
            raise HttpError(403, f"message {message_id} is {m.author}'s; only its author can change it",
                            "post a new message instead")
        return m

    def may_see(self, person: str) -> Callable[[Event], bool]:
        """For the stream: whether `person` may see an event (asked per event; a thread is read again only when an
        event says it changed)."""
        seen: dict[str, bool] = {}

        def check(event: Event) -> bool:
            name = event.thread
            if name is None:
                return True
            if name not in seen or event.kind == "thread":
                seen[name] = self.may_read(person, chat_rows.thread(self.store, name))
            return seen[name]
        return check

    # -- serving -------------------------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> HttpServer:
        """Listen on host:port (a port of 0: any free one); ListenError when it cannot."""
        try:
            sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        except OSError as e:  # its text repeats the address as a tuple: say only what went wrong
            raise ListenError(f"cannot listen on {host}:{port} for HTTP: {os.strerror(e.errno) if e.errno else e}; "
                              "choose another address with `serve --http HOST:PORT` or [http] listen") from None
        sock.setblocking(False)
        server = _Server(uvicorn.Config(self.app, lifespan="off", log_level="warning", access_log=False,
                                        timeout_graceful_shutdown=2, proxy_headers=False))
        self.hub.start()
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        bound = sock.getsockname()
        self.say(f"http: serving the chat API on http://{_host(bound[0])}:{bound[1]}"
                 + ("" if _loopback(host) else " (not loopback: put it behind a TLS reverse proxy)"))
        return HttpServer(self, server, task, bound[1])


class _Server(uvicorn.Server):
    def capture_signals(self):  # the daemon handles SIGTERM and SIGINT itself, and stops the server
        return contextlib.nullcontext()


@dataclass
class HttpServer:
    api: Api
    server: uvicorn.Server
    task: asyncio.Future
    port: int

    async def stop(self) -> None:
        await self.api.hub.stop()  # the streams end, so the server need not wait for them
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await self.task


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# -- the routes -------------------------------------------------------------------------------------------------


async def me(c: Call) -> tuple[int, Any]:
    return 200, {"person": c.person, "admin": c.api.admin(c.person)}


async def list_threads(c: Call) -> tuple[int, Any]:
    last = feed.last_message_ids(c.store)
    return 200, {"threads": [views.thread(t, last.get(t["name"])) for t in chat_rows.threads(c.store)
                             if c.api.may_read(c.person, t)]}


async def new_thread(c: Call) -> tuple[int, Any]:
    body: models.NewThread = c.body
    if chat_rows.thread(c.store, body.name) is not None:
        raise HttpError(409, f"thread '{body.name}' exists already", "choose another name, or post in that one")
    try:
        chat.create_thread(c.store, body.name, mode=body.mode, owner=c.person,
                           allow=[a.strip() for a in body.allow if a.strip()] if body.allow else None)
    except chat.ChatError as e:
        raise HttpError(400, str(e), "fix the name and try again") from None
    return 201, views.thread(chat_rows.thread(c.store, body.name) or {}, None)


async def change_thread(c: Call) -> tuple[int, Any]:
    name = c.request.path_params["name"]
    info = c.api.readable_thread(c.person, name)
    body: models.ThreadChange = c.body
    if c.person != info["owner"] and not c.api.admin(c.person):
        raise HttpError(403, f"only the owner of thread '{name}' ({info['owner'] or 'none'}) or an admin may change "
                             "it", "ask them, or make a thread of your own (POST /api/threads)")
    if body.allow is None and body.mode is None:
        raise HttpError(400, "nothing to change", "send allow (a list of people; [] lets anyone) or mode, or both")
    chat.change_thread(c.store, name, mode=body.mode,
                       allow=[a.strip() for a in body.allow if a.strip()] if body.allow is not None else None)
    return 200, views.thread(chat_rows.thread(c.store, name) or {}, feed.last_message_ids(c.store, name).get(name))


async def list_messages(c: Call) -> tuple[int, Any]:
    name = c.request.path_params["name"]
    c.api.readable_thread(c.person, name)
    after, limit = _int_param(c.request, "after", 0), _int_param(c.request, "limit", 100)
    if not 1 <= limit <= 1000:
        raise HttpError(400, f"limit={limit} is out of range", "ask for 1 to 1000 messages at a time")
    return 200, {"messages": [views.message(m) for m in chat_rows.messages(c.store, name, after=after, limit=limit)]}


async def post_message(c: Call) -> tuple[int, Any]:
    name = c.request.path_params["name"]
    info = c.api.readable_thread(c.person, name)
    if info["allow"] and c.person not in json.loads(info["allow"]) and c.person != info["owner"]:
        raise HttpError(403, f"{c.person} may read thread '{name}' but not post in it (an admin not in its allow "
                             "list)", f"ask its owner ({info['owner']}) to make a thread that allows you")
    key = c.request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise HttpError(400, f"the Idempotency-Key is {len(key)} characters",
                        f"send 1 to {MAX_IDEMPOTENCY_KEY} characters, the same for every retry of one message")
    try:
        m = chat.post_message(c.store, c.api.config.chat, name, c.person, c.body.text,
                              external_id=f"http:{c.person}:{key}" if key is not None else None)
    except chat.RequestsRefused as e:
        raise HttpError(429, str(e), "wait a minute before asking for more work", {"Retry-After": "60"}) from None
    except chat.ChatError as e:
        raise HttpError(400, str(e), "send the text of the message, up to 32,000 characters") from None
    return 201, views.message(m)


async def edit_message(c: Call) -> tuple[int, Any]:
    message_id = int(c.request.path_params["id"])
    c.api.own_message(c.person, message_id)
    try:
        chat.edit_message(c.store, message_id, c.person, c.body.text)
    except chat.ChatError as e:
        raise HttpError(400, str(e), "send the new text, up to 32,000 characters") from None
    return 200, views.message(chat_rows.message(c.store, message_id))  # type: ignore[arg-type]


async def delete_message(c: Call) -> tuple[int, Any]:
    message_id = int(c.request.path_params["id"])
    c.api.own_message(c.person, message_id)
    try:
        chat.delete_message(c.store, message_id, c.person)
    except chat.ChatError as e:
        raise HttpError(409, str(e), f"PATCH /api/messages/{message_id} sends a correction instead") from None
    return 200, views.message(chat_rows.message(c.store, message_id))  # type: ignore[arg-type]


async def get_task(c: Call) -> tuple[int, Any]:
    task_id = int(c.request.path_params["id"])
    t = views.task(c.store, task_id)
    if t is None or not c.api.may_read(c.person, chat_rows.thread(c.store, t["thread"]) if t["thread"] else None):
        raise HttpError(404, f"no task {task_id}", "task ids are in the messages that started them (task_id)")
    return 200, t


async def live(c: Call) -> Response:
    header = c.request.headers.get("last-event-id")
    raw = header if header is not None else c.request.query_params.get("after")
    if raw is not None and not raw.strip().isdigit():
        raise HttpError(400, f"'{raw}' is not an event id", "send the id of the last event you got (a number)")
    after = int(raw) if raw is not None else None
    events = c.api.hub.events(c.api.may_see(c.person), after, c.api.config.http.keepalive_seconds)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise HttpError(400, f"{name}={raw!r} is not a number", f"send {name} as a whole number") from None


ROUTES = [
    Spec("GET", "/api/me", me, "who the token is", answer=models.Me),
    Spec("GET", "/api/threads", list_threads, "the threads you may read", answer=models.Threads),
    Spec("POST", "/api/threads", new_thread, "make a thread; you are its owner", body=models.NewThread,
         answer=models.Thread, status=201),
    Spec("PATCH", "/api/threads/{name}", change_thread, "change who may post (allow; [] lets anyone) or the mode: "
         "its owner or an admin", body=models.ThreadChange, answer=models.Thread),
    Spec("GET", "/api/threads/{name}/messages", list_messages, "a thread's messages after an id (query: after, "
         "limit)", answer=models.Messages),
    Spec("POST", "/api/threads/{name}/messages", post_message, "post as yourself; text starting with / is a "
         "command. Header Idempotency-Key: a retry with the same key posts once", body=models.NewMessage,
         answer=models.Message, status=201),
    Spec("PATCH", "/api/messages/{id:int}", edit_message, "edit your message (read already: a correction is "
         "posted)", body=models.NewMessage, answer=models.Message),
    Spec("DELETE", "/api/messages/{id:int}", delete_message, "delete your message, if the agent has not read it",
         answer=models.Message),
    Spec("GET", "/api/tasks/{id:int}", get_task, "a task and its newest run", answer=models.Task),
    Spec("GET", "/api/stream", live, "Server-Sent Events: `message`, `task` and `thread` events, each with a "
         "store-wide increasing id; resume with the Last-Event-ID header or ?after=ID (`reload`: what was missed "
         "is no longer kept, load it again)", stream=True),
]


def openapi() -> dict[str, Any]:
    """The OpenAPI description of ROUTES, its schemas from models.py."""
    from pydantic.json_schema import models_json_schema

    used = {models.Error} | {m for s in ROUTES for m in (s.body, s.answer) if m is not None}
    refs, defs = models_json_schema([(m, "validation") for m in sorted(used, key=lambda m: m.__name__)],
                                    ref_template="#/components/schemas/{model}")
    ref = {m: refs[(m, "validation")] for m in used}
    paths: dict[str, dict] = {}
    errors = {str(code): {"description": why, "content": {"application/json": {"schema": ref[models.Error]}}}
              for code, why in ((400, "bad JSON or field"), (401, "no valid token"), (403, "not allowed"),
                                (404, "no such thread, message or task"), (409, "conflict"),
                                (413, "body too large"), (429, "too many requests (see Retry-After)"))}
    for s in ROUTES:
        path = s.path.replace(":int}", "}")
        op: dict[str, Any] = {"summary": s.summary, "security": [{"bearer": []}], "responses": dict(errors)}
        params: list[dict[str, Any]] = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "integer" if p == "id" else "string"}} for p in ("name", "id")
                  if "{" + p + "}" in path]
        if s.stream:
            params.append({"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer"}})
            params.append({"name": "after", "in": "query", "required": False, "schema": {"type": "integer"}})
            op["responses"][str(s.status)] = {"description": "event stream",
                                              "content": {"text/event-stream": {"schema": {"type": "string"}}}}
        elif s.answer is not None:
            op["responses"][str(s.status)] = {"description": "done",
                                              "content": {"application/json": {"schema": ref[s.answer]}}}
        if s.path.endswith("/messages") and s.method == "GET":
            params += [{"name": n, "in": "query", "required": False, "schema": {"type": "integer"}}
                       for n in ("after", "limit")]
        if s.body is models.NewMessage and s.method == "POST":
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY}})
        if params:
            op["parameters"] = params
        if s.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[s.body]}}}
        paths.setdefault(path, {})[s.method.lower()] = op
    refused = {**{k: errors[k] for k in ("400", "401", "403", "413", "429")},
               "404": {"description": "no such bridge", "content": errors["404"]["content"]},
               "503": {"description": "the bridge's secret is not set", "content": errors["404"]["content"]}}
    paths["/bridges/{name}"] = {"post": {
        "summary": "a bridged chat service's webhook ([bridges.NAME]): checked by X-Slack-Signature and "
                   "X-Slack-Request-Timestamp (slack) or the token field (mattermost), not by a person's token",
        "security": [], "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {t: {"schema": {"type": "object"}} for t in
                                                      ("application/json", "application/x-www-form-urlencoded")}},
        "responses": {"200": {"description": "taken: the id of the message posted, or null (not a person's message)"},
                      **refused}}}
    return {"openapi": "3.1.0", "info": {"title": "loopwright chat API", "version": "1"},
            "paths": paths, "components": {"schemas": defs.get("$defs", {}),
                                           "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}}

"""Chat bridges: a thread worked from a team chat service through its webhooks (`[bridges.NAME]` in the config).

Incoming, POST /bridges/NAME: the service's request is checked before anything is posted — `slack`:
`X-Slack-Signature` is `v0=` HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{body}` with the signing secret, and a
timestamp older (or newer) than `replay_seconds` is refused; `mattermost`: the request's `token` field equals the
outgoing webhook's token (both compared in constant time). The secret is read from the variable `secret_env` names,
never from a file. The message is then posted to the bridge's thread as `NAME:user` (the bridge's name, then the
remote user), under the service's message id, so a service that delivers it again (a retry) posts it once. The
pure functions here (`verify_*`, `parse_*`, `outgoing_text`) need no HTTP; the daemon's web app mounts `receive`.

Outgoing: the thread's replies (agent and system messages) and status lines are posted to `outgoing_url` as
`{"text": ...}` in order, each once: a cursor per bridge in the store (memory/bridges.py) is advanced after the
service answers 2xx. A failed post is retried (tenacity: `attempts` tries, backoff doubling from
`backoff_seconds`), then the bridge rests `REST_SECONDS` and tries the same message again — a reply is never
skipped. Deliveries are asyncio tasks of the daemon's loop (aiohttp), one per bridge at a time; a crash between
the service's 2xx and the cursor's write is the one case that posts a reply twice. A status line is posted once,
with the text it has then; its later edits are not (an incoming webhook cannot edit what it posted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from loopwright.errors import LoopwrightError
from loopwright.memory import bridges as cursors
from loopwright.memory import chat as chat_rows
from loopwright.memory.chat import MessageKind
from loopwright.runtime.chat.threads import ChatError, RequestsRefused, post_message
from loopwright.runtime.config import BridgeConfig
from loopwright.runtime.project import Project

FORWARDED = (MessageKind.AGENT, MessageKind.STATUS, MessageKind.SYSTEM)
REST_SECONDS = 60.0  # after a reply failed every attempt, before the bridge tries it again
POST_TIMEOUT = 10.0  # seconds one post to the service may take
BATCH = 50
SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")  # a Slack user id (the Events API names users by id)
USER = re.compile(r"[^\w.@-]+")


class BridgeError(LoopwrightError):
    """An incoming request refused: its HTTP status, one line, and what to do."""

    def __init__(self, status: int, message: str, hint: str):
        super().__init__(message)
        self.status, self.hint = status, hint


@dataclass(frozen=True)
class Incoming:
    """A person's message from the service: its id there (a retry repeats it), who wrote it, what they wrote."""

    message_id: str
    user: str
    text: str


# -- checking and reading a request (no HTTP) ---------------------------------------------------------------


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def verify_slack(secret: str, headers: Mapping[str, str], body: bytes, *, now: float, window: float) -> None:
    """BridgeError(401) unless the request is signed with `secret` within `window` seconds of `now`."""
    stamp, signature = headers.get("x-slack-request-timestamp", ""), headers.get("x-slack-signature", "")
    if not stamp or not signature:
        raise BridgeError(401, "the request is not signed",
                          "send X-Slack-Signature and X-Slack-Request-Timestamp (Slack's signing secret scheme)")
    try:
        age = now - int(stamp)
    except ValueError:
        raise BridgeError(401, "X-Slack-Request-Timestamp is not a number of seconds",
                          "send the Unix time the request was signed at") from None
    if abs(age) > window:
        raise BridgeError(401, f"the request was signed {age:+.0f} s from now, outside the {window:.0f} s window",
                          "a replayed request is refused; check the clocks of both machines")
    if not hmac.compare_digest(slack_signature(secret, stamp, body).encode(), signature.encode()):
        raise BridgeError(401, "the signature does not match",
                          "sign with the bridge's secret (the variable its secret_env names)")


def verify_mattermost(secret: str, fields: Mapping[str, str]) -> None:
    """BridgeError(401) unless the request's token is `secret`."""
    if not hmac.compare_digest(str(fields.get("token", "")).encode(), secret.encode()):
        raise BridgeError(401, "the token does not match",
                          "set the bridge's secret_env variable to the outgoing webhook's token")


def fields_of(body: bytes, content_type: str) -> dict:
    """A webhook's fields, sent as JSON or form-encoded."""
    try:
        if "application/x-www-form-urlencoded" in content_type:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        data = json.loads(body or b"null")
    except (UnicodeDecodeError, ValueError):
        raise BridgeError(400, "the body is neither JSON nor a form", "send the service's webhook payload") from None
    if not isinstance(data, dict):
        raise BridgeError(400, "the body is not a JSON object", "send the service's webhook payload")
    return data


def parse_slack(fields: Mapping) -> Incoming | None:
    """A Slack Events API `message`/`app_mention` event, or a slash command or outgoing-webhook form; None for what is
    not a person's message (a bot's, ours included, an edit, a join)."""
    event = fields.get("event")
    if isinstance(event, dict):
        if event.get("type") not in ("message", "app_mention") or event.get("bot_id") or event.get("subtype"):
            return None
        # channel and ts name the message whichever event delivers it (message and app_mention both can)
        where = f"{event.get('channel', '')}:{event['ts']}" if event.get("ts") else fields.get("event_id")
        user = event.get("user_name") or event.get("username") or event.get("user")
        return _incoming(where, user, _slack_text(str(event.get("text", ""))))
    if fields.get("bot_id") or fields.get("user_name") == "slackbot":
        return None
    where = fields.get("trigger_id") or (f"{fields.get('channel_id', '')}:{fields['timestamp']}"
                                         if fields.get("timestamp") else None)
    return _incoming(where, fields.get("user_name") or fields.get("user_id"), _slack_text(str(fields.get("text", ""))))


def parse_mattermost(fields: Mapping) -> Incoming | None:
    """A Mattermost outgoing webhook (or slash command) request."""
    where = fields.get("post_id") or fields.get("trigger_id")
    return _incoming(where, fields.get("user_name") or fields.get("user_id"), str(fields.get("text", "")))


def _slack_text(text: str) -> str:
    """Slack's markup back to plain text: `<@U1|ana>` is @ana, `<https://x|x>` the link, &amp; &lt; &gt; decoded."""
    text = re.sub(r"<@([A-Z0-9]+)\|([^>]+)>", r"@\2", text)
    text = re.sub(r"<(https?://[^|>]+)(\|[^>]*)?>", r"\1", text)
    return html.unescape(text)


def _incoming(message_id, user, text: str) -> Incoming | None:
    user = USER.sub("_", str(user or "")).strip("_")[:64]
    if not message_id or not user:
        raise BridgeError(400, "the request names no message id or no user",
                          "send the service's webhook payload (Slack: an event_callback; Mattermost: post_id, "
                          "user_name)")
    return Incoming(str(message_id)[:200], user, text) if text.strip() else None  # a file alone, say


def outgoing_text(shape: str, bridge: str, text: str) -> str:
    """A thread's message as the service shows it: mentions of the bridge's own users (`@slack:ana`) lose the
    prefix, and a Slack user known by id becomes a Slack mention (`<@U123>`)."""
    def mention(m: re.Match) -> str:
        user = m.group(1)
        return f"<@{user}>" if shape == "slack" and SLACK_ID.match(user) else f"@{user}"

    return re.sub(rf"@{re.escape(bridge)}:([\w.@-]+)", mention, text)


# -- the daemon's side ----------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A post the service did not answer with 2xx."""


class Bridges:
    """Every configured bridge of the project: `receive` for incoming requests, `poll` (from the daemon's loop) for
    replies going out, `aclose` when the daemon stops."""

    def __init__(self, project: Project, say: Callable[[str], None], environ: Mapping[str, str] = os.environ):
        self.project, self.store, self.say, self.environ = project, project.store, say, environ
        self.config: dict[str, BridgeConfig] = project.config.bridges
        self._running: dict[str, asyncio.Task] = {}
        self._sending: set[str] = set()  # bridges with a post on the wire (let it finish when the daemon stops)
        self._closing = False
        self._rest_until: dict[str, float] = {}
        self._looked: dict[str, int] = {}  # per bridge, a message id up to which its thread has nothing to send
        self._session: aiohttp.ClientSession | None = None
        for name, bridge in self.config.items():
            cursors.start(self.store, name, bridge.thread)
            if chat_rows.thread(self.store, bridge.thread) is None:
                say(f"bridge {name}: there is no thread '{bridge.thread}'; its messages are refused until it is "
                    f"made (`loopwright threads new {bridge.thread}`)")
            if not environ.get(bridge.secret_env):
                say(f"bridge {name}: {bridge.secret_env} is not set; its incoming requests are refused until a "
                    f"daemon starts with it")

    # -- incoming -----------------------------------------------------------------------------------------

    def receive(self, name: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> dict:
        """Check and post one incoming request; its JSON answer, or BridgeError. `headers` with lower-case names."""
        bridge = self.config.get(name)
        if bridge is None:
            raise BridgeError(404, f"no bridge '{name}'", "bridges are the [bridges.NAME] sections of the config")
        secret = self.environ.get(bridge.secret_env)
        if not secret:
            raise BridgeError(503, f"bridge '{name}' has no secret",
                              f"set {bridge.secret_env} in the daemon's environment and restart it")
        try:
            if bridge.shape == "slack":
                verify_slack(secret, headers, body, now=time.time() if now is None else now,
                             window=bridge.replay_seconds)
                fields = fields_of(body, headers.get("content-type", ""))
                if fields.get("type") == "url_verification":  # Slack checks the URL once when it is set up
                    return {"challenge": fields.get("challenge")}
                incoming = parse_slack(fields)
            else:
                fields = fields_of(body, headers.get("content-type", ""))
                verify_mattermost(secret, fields)
                incoming = parse_mattermost(fields)
        except BridgeError as e:
            if e.status == 401:  # said in the daemon log: someone sends unsigned or forged requests
                self.say(f"bridge {name}: refused a request: {e}")
            raise
        if incoming is None:
            return {"ok": True, "posted": None}
        try:
            message = post_message(self.store, self.project.config.chat, bridge.thread, f"{name}:{incoming.user}",
                                   incoming.text, external_id=f"{name}:{incoming.message_id}")
        except RequestsRefused as e:
            raise BridgeError(429, str(e), "wait a minute before asking for more work") from None
        except ChatError as e:  # signed, well formed, and refused by the thread (not allowed there, too long)
            raise BridgeError(403, str(e), f"the thread '{bridge.thread}' takes messages as {name}:USER") from None
        return {"ok": True, "posted": message.id}

    # -- outgoing -----------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Start delivering, for each bridge not already at it, what its thread said since its cursor."""
        try:
            for name, bridge in self.config.items():
                if name in self._running or time.monotonic() < self._rest_until.get(name, 0.0):
                    continue
                last = cursors.last_id(self.store, bridge.thread)  # first: what comes after it is read next time
                if not cursors.undelivered(self.store, name, FORWARDED, 1, after=self._looked.get(name, 0)):
                    self._looked[name] = last
                else:
                    task = asyncio.get_running_loop().create_task(self._deliver(name))
                    self._running[name] = task
                    task.add_done_callback(lambda _, n=name: self._running.pop(n, None))
        except Exception as e:  # a bridge must never stop the daemon
            self.say(f"bridges: {type(e).__name__}: {e}")

    async def _deliver(self, name: str) -> None:
        bridge = self.config[name]
        try:
            while batch := cursors.undelivered(self.store, name, FORWARDED, BATCH, after=self._looked.get(name, 0)):
                for message in batch:
                    text = outgoing_text(bridge.shape, name, message.text)
                    try:
                        await self._post(name, bridge, text)
                    except DeliveryError as e:
                        self.say(f"bridge {name}: message {message.id} not delivered after {bridge.attempts} "
                                 f"tries ({e}); trying again in {REST_SECONDS:.0f} s")
                        self._rest_until[name] = time.monotonic() + REST_SECONDS
                        return
                    cursors.advance(self.store, name, message.id)
                    if self._closing:
                        return
        except Exception as e:  # never into the daemon
            self.say(f"bridge {name}: {type(e).__name__}: {e}")
            self._rest_until[name] = time.monotonic() + REST_SECONDS

    async def _post(self, name: str, bridge: BridgeConfig, text: str) -> None:
        retrying = AsyncRetrying(stop=stop_after_attempt(bridge.attempts), reraise=True,
                                 wait=wait_exponential(multiplier=bridge.backoff_seconds, max=60),
                                 retry=retry_if_exception_type(DeliveryError))
        async for attempt in retrying:
            with attempt:
                await self._send(name, bridge.outgoing_url, text)

    async def _send(self, name: str, url: str, text: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT))
        self._sending.add(name)
        try:
            async with self._session.post(url, json={"text": text}) as reply:
                if not 200 <= reply.status < 300:
                    raise DeliveryError(f"HTTP {reply.status}: {(await reply.text())[:200]}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DeliveryError(f"{type(e).__name__}: {e}") from None
        finally:
            self._sending.discard(name)

    async def aclose(self) -> None:
        """Let a post on the wire finish (its cursor is then written), cancel the rest."""
        self._closing = True
        deadline = time.monotonic() + POST_TIMEOUT
        while self._sending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running.values()), timeout=5.0)
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None

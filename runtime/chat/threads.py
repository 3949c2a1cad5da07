"""Group chat: threads where several people post, mentions start work, requests fan out, replies come back.

The store holds threads and messages; `post_message` (the CLI, the TUI) only
writes rows, and the daemon's `ChatHub.poll` does the rest, so nothing is lost
when no daemon runs and a restarted daemon picks up where the last one died.

A user message arrives `pending`. When its thread is idle, pending messages
that mention the agent (or any message, in an `auto` thread) start a task whose
input is those messages plus the thread's context (the other messages since the
last run); they become `consumed` in the same transaction that creates the task
and takes the thread's lease, so none is lost and none is used twice. A mention of
one of `[chat] agents` (`@claude-code`) starts the same work on that agent. While a
thread's task runs, new messages are collected and, after `debounce_seconds` of
quiet, delivered together to the run at its next model boundary (a `notify`
command). A request for several independent things is split by the agent with
the `fan_out` tool into child tasks of one parent; each child's result is a
threaded reply, then one summary. Replies carry a unique key, so a restart never
posts one twice. `/stop`, `/cancel`, `/status` and `/retry` are commands.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pydantic import Field

from loopwright.errors import LoopwrightError
from loopwright.harness.statuses import TASK_FINAL, CommandKind, RunStatus, TaskStatus
from loopwright.harness.tools import Tool, ToolArgs, ToolContext, ToolError, ToolOutcome
from loopwright.memory import chat as rows
from loopwright.memory.chat import Message, MessageKind, MessageState
from loopwright.memory.store import Store, StoreError, Task
from loopwright.runtime.agents import LOOPWRIGHT, cli_agent
from loopwright.runtime.config import ChatConfig
from loopwright.runtime.project import Project

MAX_MESSAGE = 32_000  # characters; longer messages are refused
THREAD_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]+)")
COMMANDS = ("/stop", "/cancel", "/status", "/retry")
TASK_DONE = TASK_FINAL


class ChatError(LoopwrightError):
    """A message or thread request that cannot be taken; said in one line."""


class RequestsRefused(ChatError):
    """The author asked for work more often than `rate_per_minute`: the message is kept, not acted on."""


# -- threads and messages (any process) -----------------------------------------------------------------


def create_thread(store: Store, name: str, *, mode: str = "mention", owner: str | None = None,
                  allow: list[str] | None = None, check: str | None = None) -> None:
    if not THREAD_NAME.match(name):
        raise ChatError(f"'{name}' is not a thread name: lower-case letters, digits, '-', '_' or '.', up to 64")
    if mode not in ("mention", "auto"):
        raise ChatError(f"mode must be mention or auto, not '{mode}'")
    if not rows.add_thread(store, name, mode=mode, owner=owner, allow=allow, check=check):
        raise ChatError(f"thread '{name}' exists already")


def change_thread(store: Store, name: str, *, mode: str | None = None, allow: list[str] | None = None) -> dict:
    """Change a thread's mode, or who may post in it (an empty list: everyone); the thread as it is now."""
    info = thread(store, name)
    if mode is not None and mode not in ("mention", "auto"):
        raise ChatError(f"mode must be mention or auto, not '{mode}'")
    rows.change_thread(store, name, mode=mode or info["mode"],
                       allow=allow if allow is not None else json.loads(info["allow"]) if info["allow"] else None)
    return thread(store, name)


def thread(store: Store, name: str) -> dict:
    info = rows.thread(store, name)
    if info is None:
        known = ", ".join(rows.thread_names(store)) or "none yet"
        raise ChatError(f"no thread '{name}' (threads: {known}); create it with `loopwright threads new {name}`")
    return info


threads = rows.threads
messages = rows.messages


def post_message(store: Store, config: ChatConfig, thread_name: str, author: str, text: str, *,
                 name: str | None = None, reply_to: int | None = None, external_id: str | None = None) -> Message:
    """Store a person's message (the daemon acts on it). ChatError for what cannot be taken."""
    info = thread(store, thread_name)
    author = author.strip()
    if not author:
        raise ChatError("say who you are: --as NAME")
    allow = json.loads(info["allow"]) if info["allow"] else None
    if allow is not None and author not in allow and author != info["owner"]:
        raise ChatError(f"{author} may not post in '{thread_name}' (allowed: {', '.join(allow)})")
    text = text.strip()
    if not text:
        raise ChatError("the message is empty")
    if len(text) > MAX_MESSAGE:
        raise ChatError(f"the message is {len(text):,} characters; at most {MAX_MESSAGE:,} (attach a file to a "
                        f"task instead)")
    if external_id is not None:
        seen = rows.by_external_id(store, external_id)
        if seen is not None:
            return seen  # the same message delivered twice: taken once
    mentions = sorted(set(MENTION.findall(text)))
    now = time.time()
    state = MessageState.PENDING
    with store.transaction():
        same = rows.has_duplicate(store, thread_name, author, text, since=now - config.duplicate_seconds)
        if same and not text.startswith("/"):
            state = MessageState.DUPLICATE
        elif _starts_work(info, mentions, text, config) and not text.startswith("/"):
            if rows.requests_since(store, author, now - 60) >= config.rate_per_minute:
                state = MessageState.REFUSED
        message_id = rows.add_message(store, thread_name, author=author, author_name=name or author, text=text,
                                      kind=MessageKind.USER, state=state, mentions=mentions, reply_to=reply_to,
                                      external_id=external_id, now=now)
        message = rows.message(store, message_id or 0)
    assert message is not None
    if state == MessageState.REFUSED:
        raise RequestsRefused(f"{author} posted more than {config.rate_per_minute} requests in a minute; wait a little "
                        f"(message {message.id} kept, not acted on)")
    return message


def unknown_mentions(store: Store, message: Message, config: ChatConfig) -> list[str]:
    """Mentions that name neither the agent nor anyone who has posted in the thread (a typo'd @loopwrite)."""
    people = {a.lower() for a in rows.authors(store, message.thread)}
    return [m for m in message.mentions if m.lower() != config.name.lower() and m.lower() not in people
            and mentioned_agent([m], config) is None]


def mentioned_agent(mentions: list[str], config: ChatConfig) -> str | None:
    """The first of `[chat] agents` the mentions name (None: the request is for the configured agent)."""
    agents = {a.lower(): a for a in config.agents}
    return next((agents[m.lower()] for m in mentions if m.lower() in agents), None)


def _starts_work(info: dict, mentions: list[str], text: str, config: ChatConfig) -> bool:
    return (info["mode"] == "auto" or config.name.lower() in (m.lower() for m in mentions)
            or mentioned_agent(mentions, config) is not None)


def edit_message(store: Store, message_id: int, author: str, text: str) -> str:
    """Edit your message: still waiting, it is replaced; already taken, the change is delivered as a correction."""
    row = rows.message(store, message_id)
    if row is None or row.state == MessageState.DELETED:
        raise ChatError(f"no message {message_id}")
    if row.author != author:
        raise ChatError(f"message {message_id} is {row.author}'s; only its author can edit it")
    text = text.strip()
    if not text or len(text) > MAX_MESSAGE:
        raise ChatError("the new text is empty" if not text else f"the new text is over {MAX_MESSAGE:,} characters")
    now = time.time()
    if rows.edit_waiting(store, message_id, text, now):
        return "edited (it was still waiting: the new text is what the agent reads)"
    rows.add_message(store, row.thread, author=author, author_name=row.author_name,
                     text=f"Correction to message {message_id}: {text}", kind=MessageKind.USER,
                     state=MessageState.PENDING, reply_to=message_id, now=now)
    rows.mark_edited(store, message_id, now)
    return "the agent already read it: the new text is delivered as a correction"


def delete_message(store: Store, message_id: int, author: str) -> str:
    row = rows.message(store, message_id)
    if row is None or row.state == MessageState.DELETED:
        raise ChatError(f"no message {message_id}")
    if row.author != author:
        raise ChatError(f"message {message_id} is {row.author}'s; only its author can delete it")
    if rows.delete_waiting(store, message_id, time.time()):
        return "deleted before the agent read it"
    raise ChatError(f"message {message_id} was already read by the agent; edit it to send a correction")


# -- the agent's side ---------------------------------------------------------------------------------


class FanOutArgs(ToolArgs):
    items: list[str] = Field(min_length=1, description="one independent piece of work per item, each self-contained")
    plan: str = Field(description="one sentence: how you split the request (it is posted in the thread)")


class FanOut(Tool):
    name, args = "fan_out", FanOutArgs
    description = ("Split a chat request for several independent things into parallel runs, one per item; each "
                   "result is posted as a reply, then a summary. This ends your run.")

    async def run(self, a: FanOutArgs, ctx: ToolContext) -> ToolOutcome:
        if ctx.memory is None or ctx.memory.store is None:
            raise ToolError("fan_out works only for chat requests")
        store, task = ctx.memory.store, ctx.memory.store.task(ctx.memory.task_id)
        chat = task.options.get("chat")
        if not chat or chat.get("parent"):
            raise ToolError("fan_out works only for a chat request (and not inside a part of one)")
        cap = int(chat.get("max_fanout", 10))
        items = [i.strip() for i in a.items if i.strip()]
        capped = len(items) > cap
        created = fan_out(store, task, items[:cap], a.plan)
        note = f" (capped: {len(items)} asked, at most {cap} run at once per request)" if capped else ""
        return ToolOutcome(f"started {len(created)} runs{note}",
                           finish_summary=f"Split into {len(created)}: {a.plan}{note}")


def fan_out(store: Store, parent: Task, items: list[str], plan: str) -> list[int]:
    """Child tasks of a chat request, created once (a resumed run calling again gets the same children)."""
    existing = children(store, parent.id)
    if existing:
        return [t.id for t in existing]
    chat = parent.options["chat"]
    ids = []
    with store.transaction():
        for n, item in enumerate(items, 1):
            goal = (f"Part {n} of {len(items)} of a chat request in thread #{chat['thread']} "
                    f"(plan: {plan}):\n{item}\n\nThe whole request was:\n{parent.goal}")
            options = {k: v for k, v in parent.options.items() if k != "chat"}
            options["chat"] = {**chat, "parent": parent.id, "part": n, "parts": len(items)}
            child = store.create_task(goal, title=f"#{chat['thread']} part {n}/{len(items)}: {item[:50]}",
                                      check=parent.check_cmd, target_branch=parent.target_branch, options=options)
            rows.set_task_parent(store, child.id, parent.id)
            ids.append(child.id)
    return ids


def children(store: Store, task_id: int) -> list[Task]:
    return [store.task(i) for i in rows.child_ids(store, task_id)]


def answer(store: Store, task: Task) -> str:
    """What a finished chat task says back: its last finish summary, else its last words, else why it ended."""
    runs = store.runs(task_id=task.id)
    for run in reversed(runs):
        for _, _, e in reversed(store.events(run.id, types=("tool_started",))):
            if e.name in ("finish", "fan_out"):
                return str(e.arguments.get("summary") or e.arguments.get("plan") or "")
        convo = store.conversation(run.id)
        said = next((m.text for m in reversed(convo) if m.role == "assistant" and m.text.strip()), "")
        if said:
            return said
    return task.reason or task.status


# -- the daemon's side ----------------------------------------------------------------------------------


class ChatHub:
    """Turns messages into tasks, delivers collected messages to runs, and posts replies (in the daemon)."""

    def __init__(self, project: Project, stop_run=None, say=lambda s: None):
        self.project, self.store, self.config = project, project.store, project.config.chat
        self.stop_run, self.say = stop_run, say

    def poll(self) -> None:
        """One round: new messages of every thread with some, then the active task of every busy thread."""
        for name in rows.threads_with_pending(self.store):
            try:
                self._thread(name)
            except StoreError as e:  # rolled back; the next round tries again
                self.say(f"chat #{name}: {e}")
        for name, task_id in rows.busy_threads(self.store):
            self._follow(name, task_id)

    # -- incoming ---------------------------------------------------------------------------------------

    def _thread(self, name: str) -> None:
        info = thread(self.store, name)
        pending = [m for m in messages(self.store, name, state=MessageState.PENDING) if m.kind == MessageKind.USER]
        for m in [m for m in pending if m.text.split(maxsplit=1)[0] in COMMANDS]:
            self._command(info, m)
        pending = [m for m in pending if m.text.split(maxsplit=1)[0] not in COMMANDS]
        if not pending or time.time() - pending[-1].ts < self.config.debounce_seconds:
            return  # wait for a quiet moment: what arrives together is delivered together
        active = info["active_task"]
        if active is not None:
            self._deliver(name, active, pending)
            return
        triggers = [m for m in pending if _starts_work(info, m.mentions, m.text, self.config)]
        if not triggers:
            self._mark(pending, MessageState.CONTEXT)
            return
        self._start(info, pending, triggers[0])

    def _start(self, info: dict, pending: list[Message], trigger: Message) -> None:
        name = info["name"]
        config, agent = self.project.config, mentioned_agent(trigger.mentions, self.config)
        if agent is not None:
            config = config.model_copy(update={"agent": agent})
            try:
                cli_agent(config)
            except LoopwrightError as e:  # e.g. not in [agents]: said in the thread; the messages stay context
                self._mark(pending, MessageState.CONTEXT)
                return self._reply(trigger, f"cannot start {agent}: {e}")
        context = [m for m in messages(self.store, name, state=MessageState.CONTEXT) if m.kind == MessageKind.USER]
        lines = [f"Chat request in thread #{name} from {trigger.author_name} (message {trigger.id}):"]
        lines += [f"{m.author_name}: {m.text}" for m in pending]
        if context:
            lines += ["", "Earlier messages in the thread (context):"]
            lines += [f"- {m.author_name}: {m.text[:500]}" for m in context[-20:]]
        if config.agent == LOOPWRIGHT:
            lines += ["", f"Your `finish` summary is posted in #{name} as your answer to {trigger.author_name}. If "
                          f"the request asks for several independent things, call `fan_out` with one item per thing."]
        else:  # a CLI agent has neither tool: its last output is the answer
            lines += ["", f"What you print last is posted in #{name} as your answer to {trigger.author_name}."]
        from loopwright.runtime.runner import model_options

        options = model_options(config) | {"chat": {
            "thread": name, "message": trigger.id, "author": trigger.author, "author_name": trigger.author_name,
            "max_fanout": self.config.max_fanout}}
        now = time.time()
        with self.store.transaction():
            task = self.store.create_task("\n".join(lines), title=f"#{name}: {trigger.text[:60]}",
                                          check=info["check_cmd"], options=options)
            rows.set_task_thread(self.store, task.id, name)
            if not rows.take_lease(self.store, name, task.id, now + self.config.lease_seconds, now):
                raise StoreError(f"thread {name} is busy")  # rolls the task back
            rows.consume(self.store, [m.id for m in pending + context], task.id, now)
            on_it = f"on it with {agent}" if agent is not None else "on it"
            self._post(name, f"@{trigger.author} {on_it} (task {task.id})", kind=MessageKind.STATUS,
                       reply_to=trigger.id, key=f"status:{task.id}", task_id=task.id)
        self.say(f"chat #{name}: message {trigger.id} from {trigger.author} started task {task.id}")

    def _deliver(self, name: str, task_id: int, pending: list[Message]) -> None:
        runs = [r for r in self.store.runs(task_id=task_id) if r.status == RunStatus.RUNNING]
        if not runs:
            return  # between runs (queued, or waiting for its parts): they wait, in order
        text = "New messages in the thread while you worked (read them now):\n" + "\n".join(
            f"{m.author_name}: {m.text}" for m in pending)
        with self.store.transaction():
            ids = [m.id for m in pending]
            claimed = rows.consume(self.store, ids, task_id, time.time(), only_pending=True)
            if claimed == len(ids):
                self.store.enqueue_command(runs[-1].id, CommandKind.NOTIFY, {"text": text})
            else:
                raise StoreError("messages changed while being delivered")  # roll back; next poll retries

    def _command(self, info: dict, m: Message) -> None:
        name, word = info["name"], m.text.split(maxsplit=1)[0]
        self._mark([m], MessageState.CONSUMED)
        active = info["active_task"]
        task = self.store.task(active) if active is not None else None
        if word in ("/stop", "/cancel"):
            if task is None:
                return self._reply(m, "nothing is running in this thread")
            requester = task.options.get("chat", {}).get("author")
            if m.author not in (requester, info["owner"], *self.config.admins):
                return self._reply(m, f"refused: only {requester} (who asked), the thread's owner or an admin can "
                                      f"stop task {task.id}")
            cleared = rows.clear_pending(self.store, name)
            for t in [task, *children(self.store, task.id)]:
                if self.store.set_task_status(t.id, TaskStatus.CANCELLED, reason=f"stopped by {m.author}",
                                              only_from=(TaskStatus.QUEUED,)):
                    continue
                if self.stop_run is not None and t.status not in TASK_DONE:
                    self.stop_run(t.id, f"stopped by {m.author} in #{name}")
            if task.status == TaskStatus.WAITING:
                self.store.set_task_status(task.id, TaskStatus.CANCELLED, reason=f"stopped by {m.author}")
            done = _so_far(self.store, task)
            return self._reply(m, f"stopping task {task.id} at its next safe point. So far: {done}"
                               + (f" ({cleared} waiting message(s) cleared)" if cleared else ""))
        if word == "/status":
            if task is None:
                return self._reply(m, "idle: nothing is running in this thread")
            return self._reply(m, f"task {task.id} is {task.status}: {_so_far(self.store, task)}")
        # /retry: the last request of this thread again
        last = rows.last_request(self.store, name)
        if task is not None:
            return self._reply(m, f"task {task.id} is still {task.status}; /stop it first")
        if last is None:
            return self._reply(m, "there is no earlier request to retry")
        self._post(name, last.text, kind=MessageKind.USER, author=last.author, author_name=last.author_name,
                   state=MessageState.PENDING, key=f"retry:{m.id}")
        self._reply(m, f"retrying message {last.id}")

    # -- outgoing ---------------------------------------------------------------------------------------

    def _follow(self, name: str, task_id: int) -> None:
        """Keep the lease of a live task; post results and release the thread when its work is done."""
        task = self.store.task(task_id)
        chat = task.options.get("chat", {})
        parts = children(self.store, task.id)
        now = time.time()
        if task.status not in TASK_DONE and task.status != TaskStatus.WAITING:
            self._renew(name, now)
            return
        for part in parts:
            if part.status in TASK_DONE and not self._posted(f"reply:{part.id}"):  # answer() reads the run's events
                self._post(name, f"@{chat['author']} part {part.options['chat']['part']}/{len(parts)} "
                                 f"({part.status}): {answer(self.store, part)}",
                           kind=MessageKind.AGENT, reply_to=chat["message"], key=f"reply:{part.id}", task_id=part.id)
        done = sum(p.status in TASK_DONE for p in parts)
        if parts:
            self._status(task, f"@{chat['author']} {done} of {len(parts)} done")
            if done < len(parts):
                self._renew(name, now)
                return
            ok = sum(p.status == TaskStatus.SUCCEEDED for p in parts)
            self._post(name, f"@{chat['author']} all {len(parts)} parts finished ({ok} succeeded). "
                             f"{answer(self.store, task)}",
                       kind=MessageKind.AGENT, reply_to=chat["message"], key=f"summary:{task.id}", task_id=task.id)
            if task.status == TaskStatus.WAITING:
                self.store.set_task_status(task.id, TaskStatus.SUCCEEDED if ok == len(parts) else TaskStatus.FAILED,
                                           reason=f"{ok} of {len(parts)} parts succeeded",
                                           only_from=(TaskStatus.WAITING,))
        else:
            self._status(task, f"@{chat['author']} done: task {task.id} {task.status}")
            self._post(name, f"@{chat['author']} {answer(self.store, task)}", kind=MessageKind.AGENT,
                       reply_to=chat["message"], key=f"reply:{task.id}", task_id=task.id)
        rows.release(self.store, name, task.id)

    def _renew(self, name: str, now: float) -> None:
        """Extend the thread's lease once half of it has gone (not a write at every poll)."""
        rows.renew_lease(self.store, name, now + self.config.lease_seconds,
                         if_before=now + self.config.lease_seconds / 2)

    def _posted(self, key: str) -> bool:
        return rows.is_posted(self.store, key)

    def _status(self, task: Task, text: str) -> None:
        """The request's status message, edited in place."""
        rows.edit_by_key(self.store, f"status:{task.id}", text, time.time())

    def _reply(self, to: Message, text: str) -> None:
        self._post(to.thread, f"@{to.author} {text}", kind=MessageKind.SYSTEM, reply_to=to.id, key=f"answer:{to.id}")

    def _post(self, name: str, text: str, *, kind: str, reply_to: int | None = None, key: str | None = None,
              task_id: int | None = None, author: str | None = None, author_name: str | None = None,
              state: str = MessageState.POSTED) -> None:
        """An agent or system message; with a `key`, at most once ever (a restarted daemon may try again)."""
        rows.add_message(self.store, name, author=author or self.config.name,
                         author_name=author_name or self.config.name, text=text[:MAX_MESSAGE], kind=kind, state=state,
                         mentions=sorted(set(MENTION.findall(text))), reply_to=reply_to, task_id=task_id, reply_key=key,
                         once=True)

    def _mark(self, ms: list[Message], state: str) -> None:
        rows.mark_pending(self.store, [m.id for m in ms], state, time.time())


def _so_far(store: Store, task: Task) -> str:
    runs = store.runs(task_id=task.id)
    parts = children(store, task.id)
    if parts:
        done = sum(p.status in TASK_DONE for p in parts)
        return f"{done} of {len(parts)} parts done"
    if not runs:
        return "it had not started"
    r = runs[-1]
    cps = len(store.checkpoints(r.id))
    return f"{r.step} steps, {cps} checkpoint(s); last action: {r.last_action or 'none'}"


def as_dict(m: Message) -> dict[str, Any]:
    return {"id": m.id, "thread": m.thread, "author": m.author, "name": m.author_name, "text": m.text,
            "reply_to": m.reply_to, "mentions": m.mentions, "kind": m.kind, "state": m.state, "task": m.task_id,
            "edited": m.edited, "ts": m.ts}

"""The bodies of the HTTP API as pydantic models: requests are validated with them, and /openapi.json is generated
from them (app.ROUTES names each route's), so the description cannot drift from what is served."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopwright.runtime.chat.threads import MAX_MESSAGE


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a field the API does not take (an author, say) is an error


class NewThread(_Body):
    name: str = Field(description="lower-case letters, digits, '-', '_' or '.', up to 64")
    allow: list[str] | None = Field(default=None, description="only these people (and you, its owner) may post")
    mode: Literal["mention", "auto"] = Field(default="mention", description="auto: every message starts work")


class ThreadChange(_Body):
    allow: list[str] | None = Field(default=None, description="only these people (and its owner) may post; [] lets "
                                                              "anyone; left out: as it is")
    mode: Literal["mention", "auto"] | None = Field(default=None, description="left out: as it is")


class NewMessage(_Body):
    text: str = Field(max_length=MAX_MESSAGE, description="a message, or a command: /stop, /cancel, /status, /retry")


class Error(BaseModel):
    error: str = Field(description="what went wrong, in one line")
    hint: str = Field(description="what to do about it")


class Me(BaseModel):
    person: str
    admin: bool = Field(description="in [chat] admins: may /stop anything")


class Thread(BaseModel):
    name: str
    owner: str | None
    allow: list[str] | None
    mode: Literal["mention", "auto"]
    last_message_id: int | None


class Threads(BaseModel):
    threads: list[Thread]


class Message(BaseModel):
    id: int
    thread: str
    author: str
    author_name: str
    text: str = Field(description="empty once deleted")
    kind: Literal["user", "agent", "status", "system"]
    state: str = Field(description="pending, context, consumed, cleared, duplicate, refused, deleted or posted")
    task_id: int | None
    reply_to: int | None
    mentions: list[str]
    created_at: float = Field(description="seconds since the epoch")
    edited: bool
    edited_at: float | None
    deleted: bool


class Messages(BaseModel):
    messages: list[Message]


class Run(BaseModel):
    status: str
    checkpoints: int
    cost_usd: float | None
    last_summary: str | None = Field(description="the run's finish summary once it ended, else its last checkpoint")


class Task(BaseModel):
    id: int
    status: str
    title: str
    reason: str
    thread: str | None
    run: Run | None = Field(description="the newest run; null before the first")

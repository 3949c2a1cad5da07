"""The live stream: the store's change feed, read by one poller in the daemon and fanned out to every client.

Triggers write a feed row in the same transaction as each change to a message or a task's state (memory/stream.py),
whichever process makes it (`loopwright say`, a run, this daemon), so the poller sees every change, in commit
order, under a store-wide id. A client sends that id back (`Last-Event-ID`) and gets what came after it: read from
the feed up to where the live fan-out took over, then live, each id once. A client that falls too far behind is
dropped and catches up from the feed when it reconnects. The daemon prunes changes older than [http] feed_hours: a
client resuming from before what is left gets a `reload` event instead (load the threads and messages again), then
what comes live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from loopwright.memory import chat as chat_rows
from loopwright.memory import stream as feed
from loopwright.memory.notifications import write_mark
from loopwright.memory.store import Store
from loopwright.runtime.http import views

BATCH = 500  # feed rows read at once
BACKLOG = 10_000  # events a client may be behind before it is dropped
POLL_SECONDS = 0.05  # how often the feed is looked at when nothing woke the poller


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # message | task | thread | reload
    data: dict
    thread: str | None  # who may see it: the readers of this thread (None: everyone)

    @functools.cached_property
    def sse(self) -> bytes:  # made once, however many clients it goes to
        return f"id: {self.id}\nevent: {self.kind}\ndata: {json.dumps(self.data, ensure_ascii=False)}\n\n".encode()


def render(store: Store, change: tuple[int, str, int, str | None]) -> Event | None:
    """The event of one feed row: the message or the thread as it is now, or the task with its status as of the
    change and its run as it is now (None when it is gone)."""
    change_id, kind, ref, status = change
    if kind == "message":
        m = chat_rows.message(store, ref)
        return None if m is None else Event(change_id, kind, views.message(m), m.thread)
    if kind == "thread":
        info = chat_rows.thread_by_rowid(store, ref)
        if info is None:
            return None
        last = feed.last_message_ids(store, info["name"]).get(info["name"])
        return Event(change_id, kind, views.thread(info, last), info["name"])
    t = views.task(store, ref)
    return None if t is None else Event(change_id, kind, t | {"status": status or t["status"]}, t["thread"])


def reload(change_id: int, after: int, why: str) -> Event:
    """The event telling a client that resumed after `after` that it cannot have the changes it missed."""
    return Event(change_id, "reload", {"after": after, "reason": f"the changes after event {after} {why}",
                                       "hint": "load the threads and messages again"}, None)


class Client:
    def __init__(self, may_see: Callable[[Event], bool]):
        self.may_see = may_see
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(BACKLOG)

    def offer(self, event: Event) -> bool:
        """Queue the event if the client may see it; False when the client is too far behind (it is ended)."""
        if not self.may_see(event):
            return True
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self.queue.get_nowait()
        self.queue.put_nowait(None)


class Hub:
    """Reads new feed rows (when the store changed, or a request of this daemon wrote) and offers them to every
    client."""

    def __init__(self, store: Store):
        self.store = store
        self.position = feed.last_change(store)  # every change up to here has been offered
        self.clients: set[Client] = set()
        self.wake = asyncio.Event()
        self._mark: tuple[int, int] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        for client in list(self.clients):
            client.end()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)
            self.wake.clear()
            self.poll()

    def poll(self) -> None:
        mark = write_mark(self.store)
        if mark == self._mark:
            return
        self._mark = mark
        while changes := feed.changes_after(self.store, self.position, BATCH):
            for change in changes if self.clients else ():
                event = render(self.store, change)
                if event is not None:
                    for client in list(self.clients):
                        if not client.offer(event):
                            self.drop(client)
            self.position = changes[-1][0]

    def drop(self, client: Client) -> None:
        self.clients.discard(client)
        client.end()

    async def events(self, may_see: Callable[[Event], bool], after: int | None,
                     keepalive: float) -> AsyncIterator[bytes]:
        """The stream of one client: what came after `after` (None: from now on), then live; a comment line after
        `keepalive` seconds of quiet. A `reload` event first when changes after `after` were pruned, or `after` is
        beyond any change (another store's)."""
        client = Client(may_see)
        self.clients.add(client)  # from here on, everything after self.position is queued for it
        sent = self.position if after is None else after
        try:
            yield b"retry: 2000\n\n"
            if sent > self.position:
                first, sent = sent, self.position
                yield reload(sent, first, "are not this store's (it is newer than the last change)").sse
            while sent < self.position:  # the backlog, from the feed, up to where the live events begin
                if sent < feed.pruned_up_to(self.store):  # checked with each read: the daemon prunes meanwhile
                    first, sent = sent, self.position
                    yield reload(sent, first, "are no longer kept (older than [http] feed_hours)").sse
                    break
                changes = feed.changes_after(self.store, sent, min(BATCH, self.position - sent))
                if not changes:
                    break
                for change in changes:
                    event = render(self.store, change)
                    if event is not None and may_see(event):
                        yield event.sse
                sent = changes[-1][0]
            while True:
                try:
                    event = client.queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        event = await asyncio.wait_for(client.queue.get(), keepalive)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                # what queued up meanwhile goes out in the same write: a client (or a daemon) short of CPU catches
                # up instead of falling further behind, one write per event
                ready = [event]
                while ready[-1] is not None and not client.queue.empty():
                    ready.append(client.queue.get_nowait())
                parts = []
                for e in ready:
                    if e is not None and e.id > sent:
                        parts.append(e.sse)
                        sent = e.id
                if parts:
                    yield b"".join(parts)
                if ready[-1] is None:
                    return
        finally:
            self.clients.discard(client)

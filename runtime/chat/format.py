"""How a chat message reads in a terminal: one line, shared by `loopwright chat` and the TUI's chat view."""

from __future__ import annotations

import time

from loopwright.runtime.chat.threads import Message


def line(m: Message) -> str:
    """One message as a person reads it."""
    stamp = time.strftime("%H:%M:%S", time.localtime(m.ts))
    reply = f" ↳{m.reply_to}" if m.reply_to else ""
    edited = " (edited)" if m.edited else ""
    tag = {"status": " [status]", "system": " [loopwright]"}.get(m.kind, "")
    flag = {"duplicate": " [duplicate: not acted on]", "refused": " [refused: rate limit]",
            "cleared": " [cleared by /stop]"}.get(m.state, "")
    return f"[{stamp}] {m.id:>4}{reply} {m.author_name}{tag}: {m.text}{edited}{flag}"

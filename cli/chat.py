"""`loopwright threads`, `loopwright say` and `loopwright chat`: the group chat from a terminal."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from pathlib import Path

from loopwright.cli.common import print_json
from loopwright.memory import chat as chat_rows
from loopwright.runtime.chat.format import line
from loopwright.runtime.chat.threads import (
    ChatError,
    as_dict,
    change_thread,
    create_thread,
    delete_message,
    edit_message,
    messages,
    post_message,
    threads,
    unknown_mentions,
)
from loopwright.runtime.project import open_project


def cmd_threads(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True)
    if args.action == "new":
        if not args.name:
            raise ChatError("name the thread: loopwright threads new NAME")
        allow = [a.strip() for a in args.allow.split(",") if a.strip()] if args.allow else None
        create_thread(project.store, args.name, mode="auto" if args.auto else "mention", owner=args.owner,
                      allow=allow, check=args.check)
        if args.json:
            print_json({"thread": args.name, "mode": "auto" if args.auto else "mention"})
        else:
            how = "every message starts work" if args.auto else f"mention @{project.config.chat.name} to start work"
            print(f"thread #{args.name} created ({how})")
        return 0
    if args.action == "set":
        if not args.name or (args.allow is None and not args.auto and not args.mention):
            raise ChatError("say what to change: loopwright threads set NAME [--allow A,B | --allow ''] "
                            "[--auto | --mention]")
        allow = [a.strip() for a in args.allow.split(",") if a.strip()] if args.allow is not None else None
        info = change_thread(project.store, args.name, allow=allow,
                             mode="auto" if args.auto else "mention" if args.mention else None)
        if args.json:
            print_json({"thread": args.name, "mode": info["mode"], "allow": json.loads(info["allow"] or "null")})
        else:
            print(f"thread #{args.name}: {info['mode']}, "
                  + (f"only {', '.join(json.loads(info['allow']))} may post" if info["allow"] else "anyone may post"))
        return 0
    rows = threads(project.store)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no threads yet (create one with: loopwright threads new general)")
    for r in rows:
        busy = f"busy with task {r['active_task']}" if r["active_task"] else "idle"
        print(f"#{r['name']:<20} {r['mode']:<8} {r['messages']:>5} messages  {busy}"
              + (f"  owner {r['owner']}" if r["owner"] else ""))
    return 0


def cmd_say(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True)
    store, config = project.store, project.config.chat
    if args.edit is not None:
        said = edit_message(store, args.edit, args.author, args.text)
    elif args.delete is not None:
        said = delete_message(store, args.delete, args.author)
    else:
        m = post_message(store, config, args.thread, args.author, args.text, name=args.name, reply_to=args.reply_to,
                         external_id=args.id)
        if args.json:
            print_json(as_dict(m))
            return 0
        print(line(m))
        for name in unknown_mentions(store, m, config):
            print(f"note: no agent or member @{name} here; mention @{config.name} to start work", file=sys.stderr)
        return 0
    if args.json:
        print_json({"result": said})
    else:
        print(said)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive: new messages appear as they come; each line typed is posted (`/quit` leaves)."""
    from loopwright.runtime.chat.threads import thread as thread_info

    project = open_project(Path.cwd(), create=True)
    store, config = project.store, project.config.chat
    thread_info(store, args.thread)
    typed: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for text in sys.stdin:
            typed.put(text.rstrip("\n"))
        typed.put(None)
    threading.Thread(target=read, daemon=True).start()
    print(f"#{args.thread} as {args.author} — mention @{config.name} to ask for work; /stop, /status, /retry; "
          f"/edit N text, /delete N; /quit to leave", flush=True)
    shown: dict[int, str] = {}  # id -> the text last printed (a status message is edited in place)

    def show(m) -> None:
        if shown.get(m.id) != m.text:
            print(line(m), flush=True)
            shown[m.id] = m.text
    for m in messages(store, args.thread)[-args.history:]:
        show(m)
    last_id = max(shown, default=0)
    seen_edit = time.time()
    while True:
        try:
            text = typed.get(timeout=0.3)
        except queue.Empty:
            text = ""
        except KeyboardInterrupt:
            return 0
        if text is None or text.strip() == "/quit":
            return 0
        if text.strip():
            try:
                word, _, rest = text.strip().partition(" ")
                if word == "/edit":
                    number, _, new = rest.partition(" ")
                    print(edit_message(store, int(number), args.author, new))
                elif word == "/delete":
                    print(delete_message(store, int(rest), args.author))
                else:
                    m = post_message(store, config, args.thread, args.author, text, name=args.name)
                    for name in unknown_mentions(store, m, config):
                        print(f"note: no agent or member @{name} here; mention @{config.name}")
            except (ChatError, ValueError) as e:
                print(f"error: {e}")
        for m in messages(store, args.thread, after=last_id):
            show(m)
            last_id = m.id
        edited = chat_rows.edited(store, args.thread, since=seen_edit, up_to=last_id)
        for m in edited:
            show(m)
        if edited:
            seen_edit = max(m.updated_at for m in edited)


def add_parsers(sub, add) -> None:
    """Register `threads`, `say` and `chat` on the main parser."""
    sp = add("threads", cmd_threads, "chat threads: list them, `threads new NAME` to create one, `threads set NAME` "
             "to change its mode or who may post")
    sp.add_argument("action", nargs="?", choices=["list", "new", "set"], default="list")
    sp.add_argument("name", nargs="?")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--auto", action="store_true", help="with new or set: every message starts work (no mention "
                                                         "needed)")
    g.add_argument("--mention", action="store_true", help="with set: only a mention of the agent starts work")
    sp.add_argument("--owner", help="with new: the thread's owner (may /stop anything in it)")
    sp.add_argument("--allow", metavar="A,B", help="with new or set: only these authors may post (set --allow '': "
                                                   "anyone)")
    sp.add_argument("--check", help="with new: acceptance check for the thread's tasks")

    sp = add("say", cmd_say, "post one message to a thread (mention @loopwright to start work)")
    sp.add_argument("thread")
    sp.add_argument("text")
    sp.add_argument("--as", dest="author", required=True, metavar="NAME", help="who you are")
    sp.add_argument("--name", help="display name (default: the --as name)")
    sp.add_argument("--reply-to", type=int, metavar="ID")
    sp.add_argument("--id", help="your message id: the same id posted twice is taken once")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--edit", type=int, metavar="ID", help="replace the text of your message ID")
    g.add_argument("--delete", type=int, metavar="ID", help="delete your message ID (if not read yet)")

    sp = add("chat", cmd_chat, "an interactive chat in a thread: new messages live, what you type is posted",
             json_flag=False)
    sp.add_argument("thread")
    sp.add_argument("--as", dest="author", required=True, metavar="NAME")
    sp.add_argument("--name", help="display name")
    sp.add_argument("--history", type=int, default=20, help="earlier messages shown at the start")

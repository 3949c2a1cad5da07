"""`loopwright people`: who may use the chat API over HTTP, each with a token of their own."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from loopwright.cli.common import add_actions, print_json
from loopwright.memory import people
from loopwright.runtime.http.auth import add_person, revoke_person
from loopwright.runtime.project import open_project


def cmd_add(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True)
    token = add_person(project.store, args.name)
    if args.json:
        print_json({"person": args.name, "token": token})
    else:
        print(f"{args.name}'s token (shown this once; the store keeps only its hash):\n{token}\n"
              f"{args.name} sends it as `Authorization: Bearer <token>`; revoke it with `loopwright people revoke "
              f"{args.name}`")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True)
    rows = people.everyone(project.store)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("nobody yet (add a person with: loopwright people add NAME)")
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))
        state = ("revoked " + time.strftime("%Y-%m-%d %H:%M", time.localtime(r["revoked_at"]))
                 if r["revoked_at"] else "token in use")
        print(f"{r['name']:<24} since {since}  {state}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True)
    revoke_person(project.store, args.name)
    if args.json:
        print_json({"person": args.name, "revoked": True})
    else:
        print(f"{args.name}'s token is revoked: the chat API refuses it from now on")
    return 0


def add_parsers(sub, add) -> None:
    """Register `people add|list|revoke` on the main parser."""
    sp = add("people", None, "who may use the chat API over HTTP: add (prints a token once), list, revoke",
             json_flag=False)
    action = add_actions(sp, "action")
    name = "letters, digits, '-', '_' or '.', up to 64: the author of what they post, and how they are @mentioned"
    action("add", cmd_add, "add a person; their token is printed once").add_argument("name", help=name)
    action("list", cmd_list, "everyone, and whether their token is in use")
    action("revoke", cmd_revoke, "revoke a person's token at once").add_argument("name", help="who to revoke")

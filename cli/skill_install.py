"""`loopwright skills install / verify / update / rollback / remove`: the commands over skills/install.py (with
sources.py and plan.py) and skills/lock.py, and their output (imported only when one of them runs: it brings in
GitPython and the scanner)."""

from __future__ import annotations

import argparse
import sys

from loopwright.cli.common import print_json, project_root
from loopwright.skills.catalog import SkillError, is_trusted
from loopwright.skills.install import install, request_from_manifest, update
from loopwright.skills.lock import Out, Scope, project_scope, read_manifest, remove, rollback, user_scope, verify
from loopwright.skills.plan import Request
from loopwright.skills.sources import parse_source, sanitize


class Printer(Out):
    """Human output, silenced when --json asks for one JSON document instead (findings that refuse an install are
    that document then)."""

    def __init__(self, json_mode: bool):
        self.json_mode = json_mode

    def say(self, text: str = "") -> None:
        if not self.json_mode:
            print(text)

    def findings(self, findings: list, *, refused: bool) -> None:
        if self.json_mode:
            if refused:
                print_json({"findings": [f.__dict__ for f in findings]})
            return
        for f in findings:
            print(f"  {f}")


def _scopes(args: argparse.Namespace, every: bool) -> list[Scope]:
    """--user / --project; without either, the user scope for install and every scope that exists otherwise."""
    if getattr(args, "project", False):
        return [project_scope(project_root())]
    if getattr(args, "user", False) or not every:
        return [user_scope()]
    root = project_root()
    return [user_scope()] + ([project_scope(root)] if root is not None else [])


def _print(data: dict, out: Printer) -> None:
    if out.json_mode:
        print_json(data)


def cmd_install(args: argparse.Namespace) -> int:
    out = Printer(args.json)
    scope = _scopes(args, every=False)[0]
    if args.source is None:
        if not args.frozen:
            raise SkillError("install needs a source: a folder, a git URL or a .zip/.tar.gz archive (or --frozen "
                             "alone, to install everything the lock holds)")
        manifest = read_manifest(scope)
        if not manifest:
            raise SkillError(f"nothing to install: {scope.manifest_path} lists no sources; install a source first")
        reqs = [request_from_manifest(scope, e, args.allow_risky) for _, e in sorted(manifest.items())]
    else:
        source = parse_source(args.source)
        if args.name is not None and (sanitize(args.name) != args.name):
            raise SkillError(f"--name '{args.name}' is not a usable pack name; use lowercase letters, digits and "
                             f"hyphens, e.g. '{sanitize(args.name)}'")
        req = Request(scope, source, args.name, args.skill or None, args.plugin or None, [], args.allow_risky)
        old = read_manifest(scope).get(req.key)
        if args.frozen and old is not None:
            req = request_from_manifest(scope, old, args.allow_risky)
            req.skills = args.skill or req.skills
        reqs = [req]
    result = install(scope, reqs, out, frozen=args.frozen)
    for row in result["installed"]:
        out.say(f"installed {row['ref']}" + (f" {row['version']}" if row["version"] else "") + f" -> {row['path']}")
    for row in result["unchanged"]:
        out.say(f"unchanged {row['ref']} ({row['path']})")
    out.say(f"{len(result['installed'])} installed, {len(result['unchanged'])} unchanged, {len(result['skipped'])} "
            f"skipped ({scope.name} scope, {scope.root})")
    if scope.project is not None:
        result["trusted"] = is_trusted(scope.project)
        if not result["trusted"]:
            out.say("note: agents load this repository's skills only after `loopwright trust`")
    _print(result, out)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    out = Printer(args.json)
    code, rows = verify(_scopes(args, every=True), out)
    _print({"skills": rows}, out)
    return code


def cmd_update(args: argparse.Namespace) -> int:
    """Show what changed, then apply it with --yes, or a y on a terminal; exit 1 when it is not applied."""
    out = Printer(args.json)
    asked = False

    def confirm(changes: int) -> bool:
        nonlocal asked
        if args.yes:
            return True
        if sys.stdin.isatty() and not out.json_mode:
            asked = True
            return input(f"apply {changes} change(s)? [y/N] ").strip().lower() in ("y", "yes")
        return False

    result = update(_scopes(args, every=True), args.name, args.allow_risky, out, confirm)
    changes = result["changes"]
    unversioned = [c["ref"] for c in changes if c.get("same_version")]
    if changes and not result["applied"]:
        if asked:
            out.say("nothing changed")
            return 1
        _print(result, out)
        warn = (f"; {', '.join(unversioned)} changed without a version change" if unversioned else "")
        print(f"loopwright: error: {len(changes)} update(s) not applied{warn}; read the changes above, "
              f"then rerun with --yes to accept them", file=sys.stderr)
        return 1
    if unversioned:
        print(f"loopwright: warning: {', '.join(unversioned)} changed without a version change", file=sys.stderr)
    _print(result, out)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    out = Printer(args.json)
    _print(rollback(_scopes(args, every=True), args.name, out), out)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    out = Printer(args.json)
    _print(remove(_scopes(args, every=True), args.name, out), out)
    return 0

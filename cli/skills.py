"""`loopwright skills ...` and `loopwright trust`: what is installed, where from, and whether it is sound."""

from __future__ import annotations

import argparse
from pathlib import Path

from loopwright.cli.common import add_actions, print_json, project_root
from loopwright.skills.catalog import Catalog, SkillError, discover, is_trusted, set_trust
from loopwright.skills.format import is_valid, validate_skill


def _disabled(root: Path | None) -> set[str]:
    if root is None or not (root / ".loopwright" / "state.db").exists():
        return set()
    from loopwright.memory.store import Store

    return Store(root / ".loopwright" / "state.db").disabled_skills()


def _catalog() -> tuple[Catalog, Path | None]:
    root = project_root()
    return discover(root, disabled=_disabled(root)), root


def _row(e, status: str = "enabled") -> dict:
    return {"name": e.name, "ref": e.ref, "scope": e.scope, "pack": e.pack, "status": status,
            "description": e.skill.description, "path": str(e.skill.path)}


def cmd_list(args: argparse.Namespace) -> int:
    cat, _ = _catalog()
    rows = ([_row(e) for e in cat.entries]
            + [_row(e, "draft" if e.scope == "learned" else "disabled") for e in cat.disabled]
            + [_row(e, "shadowed") for e in cat.shadowed])
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no skills found (put skill folders in ~/.loopwright/skills/ or, after `loopwright trust`, "
              ".claude/skills/)")
    for r in rows:
        flag = "" if r["status"] == "enabled" else f" [{r['status']}]"
        print(f"{r['ref']:<32} {r['scope']:<8} {' '.join(r['description'].split())[:80]}{flag}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cat, _ = _catalog()
    e = cat.get(args.name)
    s = e.skill
    data = {**_row(e, "disabled" if e in cat.disabled else "enabled"), "license": s.license,
            "compatibility": s.compatibility, "metadata": s.metadata, "allowed_tools": s.allowed_tools,
            "files": s.files()}
    if args.json:
        print_json({**data, "body": s.body()})
        return 0
    print(f"{e.ref} ({e.scope}) — {s.path}")
    print(" ".join(s.description.split()))
    for key in ("license", "compatibility", "allowed_tools"):
        if data[key]:
            print(f"{key.replace('_', '-')}: {data[key]}")
    print(f"files: {', '.join(data['files']) or '(only SKILL.md)'}")
    print()
    print(s.body().strip())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    cat, _ = _catalog()
    hits = cat.search(args.query, limit=args.limit)
    if args.json:
        print_json([{"score": score, **_row(e)} for score, e in hits])
        return 0
    if not hits:
        print(f"no skill matches {args.query!r}")
    for score, e in hits:
        print(f"{score:6.2f}  {e.ref:<32} {' '.join(e.skill.description.split())[:80]}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    cat, root = _catalog()
    diags = cat.diagnostics
    if args.json:
        print_json({"skills": len(cat.entries), "diagnostics": [d.__dict__ for d in diags],
                "trusted": bool(root and is_trusted(root))})
        return 0
    print(f"{len(cat.entries)} skill(s) available, {len(cat.disabled)} disabled, {len(cat.shadowed)} shadowed")
    for d in diags:
        print(str(d))
    if not diags:
        print("no problems found")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Strict validation of one skill folder, or of every skill under a folder. Exit 1 on any error."""
    from loopwright.skills.catalog import skill_folders
    from loopwright.skills.format import SKILL_FILE, SKILL_FILES, skill_file

    path = Path(args.path)
    if not path.exists():
        raise SkillError(f"no such folder: {path}")
    if path.is_file() and path.name in SKILL_FILES:
        path = path.parent
    folders = [path] if Path(skill_file(path)).is_file() else skill_folders(path)[0]
    if not folders:
        raise SkillError(f"no {SKILL_FILE} under {path} (a skill is a folder holding {SKILL_FILE})")
    results = {str(f): validate_skill(f, strict=args.strict) for f in folders}
    bad = [f for f, d in results.items() if not is_valid(d)]
    warned = [f for f, d in results.items() if d and is_valid(d)]
    if args.json:
        print_json({f: [d.__dict__ for d in ds] for f, ds in results.items()})
    else:
        for f, ds in results.items():
            print(f"{'FAIL' if f in bad else 'ok  '} {f}")
            for d in ds:
                print(f"     {d.level}: {d.message}")
        print(f"{len(folders)} skill(s): {len(bad)} invalid, {len(warned)} with warnings")
    if bad:
        return 1
    return 3 if args.strict_warnings and warned else 0


def cmd_enable(args: argparse.Namespace) -> int:
    from loopwright.runtime.project import open_project

    cat, _ = _catalog()
    entry = cat.get(args.name)
    project = open_project(Path.cwd())
    enabled = args.skills_command == "enable"
    project.store.set_skill_enabled(entry.name, enabled)
    if args.json:
        print_json({"name": entry.name, "enabled": enabled})
    else:
        print(f"skill {entry.name} {'enabled' if enabled else 'disabled'} for {project.root}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Enable a skill that reflection drafted into the learned pack (drafts start disabled)."""
    from loopwright.runtime.project import open_project

    cat, _ = _catalog()
    project = open_project(Path.cwd())
    drafts = [e for e in cat.disabled + cat.entries if e.scope == "learned"]
    entry = next((e for e in drafts if args.name in (e.name, e.ref)), None)
    if entry is None:
        names = ", ".join(e.name for e in drafts) or "none yet"
        raise SkillError(f"no learned skill '{args.name}' (learned skills: {names}); other skills are switched on "
                         f"with `loopwright skills enable`")
    project.store.set_skill_enabled(entry.name, True)
    if args.json:
        print_json({"name": entry.name, "ref": entry.ref, "path": str(entry.skill.path), "enabled": True})
    else:
        print(f"learned skill {entry.ref} promoted: agents of {project.root} can use it ({entry.skill.path})")
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    root = project_root()
    if root is None:
        raise SkillError("not inside a git repository: trust is given to a repository's own skills")
    set_trust(root, not args.revoke)
    found = [d for d in (".loopwright/skills", ".agents/skills", ".claude/skills") if (root / d).is_dir()]
    if args.json:
        print_json({"project": str(root), "trusted": not args.revoke, "skill_folders": found})
    elif args.revoke:
        print(f"{root}: its own skills are no longer loaded")
    else:
        print(f"{root}: trusted; its skills in {', '.join(found) or '(no skill folders yet)'} are loaded")
    return 0


def _installer(name: str):
    """A command from cli/skill_install.py, imported when it runs (it brings in GitPython and the scanner)."""

    def run(args: argparse.Namespace) -> int:
        from loopwright.cli import skill_install

        return getattr(skill_install, name)(args)

    return run


def add_parsers(sub, add) -> None:
    """Register `skills ...` and `trust` on the main parser (`add(name, func, help)` makes a subparser)."""
    sp = add("trust", cmd_trust, "let this repository's own skills (.claude/skills, ...) into agents' prompts")
    sp.add_argument("--revoke", action="store_true", help="stop loading them")

    skills = add("skills", None, "installed skills: list, show, search, validate, doctor, enable, disable, "
                                 "install, verify, update, rollback, remove, promote", json_flag=False)
    action = add_actions(skills, "skills_command")

    action("list", cmd_list, "every skill agents can use, with its scope; disabled and shadowed ones marked")
    action("show", cmd_show, "one skill: its front matter, files and instructions").add_argument("name")
    p = action("search", cmd_search, "skills ranked by relevance to a query over names and descriptions")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=10)
    action("doctor", cmd_doctor, "problems found while loading skills (skipped files, collisions, trust)")
    p = action("validate", cmd_validate, "strict check of a skill folder against the Agent Skills specification "
                                         "(exit 1 when invalid)")
    p.add_argument("path")
    p.add_argument("--strict", action="store_true",
                   help="the specification's limits as errors, where Claude Code is lenient (a description over "
                        "1,024 characters)")
    p.add_argument("--strict-warnings", action="store_true", help="exit 3 when there are warnings")
    action("enable", cmd_enable, "let agents of this project use a skill").add_argument("name")
    action("disable", cmd_enable, "hide a skill from agents of this project").add_argument("name")
    action("promote", cmd_promote, "enable a skill reflection drafted from repeated success (learned pack)"
           ).add_argument("name")

    def scope_flags(p) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--user", action="store_true", help="the user scope (~/.loopwright/skills)")
        g.add_argument("--project", action="store_true", help="this repository's .loopwright/skills (committable lock)")

    p = action("install", _installer("cmd_install"), "install skills from a folder, a git URL[@ref], a .zip/.tar.gz "
                                                     "or a marketplace; validated, scanned and locked")
    p.add_argument("source", nargs="?", help="folder, git URL (https://, git@host:path, file://) with optional @ref, "
                                             "or archive; none with --frozen: everything in the manifest")
    scope_flags(p)
    p.add_argument("--skill", action="append", metavar="NAME", help="install only this skill (repeatable)")
    p.add_argument("--plugin", action="append", metavar="NAME", help="marketplace: only this plugin (repeatable)")
    p.add_argument("--name", metavar="PACK", help="the pack name (default: from the source)")
    p.add_argument("--allow-risky", action="store_true", help="install despite high-risk scan findings")
    p.add_argument("--frozen", action="store_true", help="install exactly what the lock holds; fail if anything "
                                                         "differs")
    p = action("verify", _installer("cmd_verify"), "rehash installed skills against the lock (exit 1 if any differ)")
    scope_flags(p)
    p = action("update", _installer("cmd_update"), "re-resolve installed sources, show what changed, apply with --yes")
    p.add_argument("name", nargs="?", help="a skill (pack:skill or name), a pack or a source; default: everything")
    scope_flags(p)
    p.add_argument("--yes", action="store_true", help="apply without asking")
    p.add_argument("--allow-risky", action="store_true", help="update despite high-risk scan findings")
    p = action("rollback", _installer("cmd_rollback"), "swap an updated skill back to the copy it replaced")
    p.add_argument("name")
    scope_flags(p)
    p = action("remove", _installer("cmd_remove"), "delete an installed skill and its lock and manifest entries")
    p.add_argument("name")
    scope_flags(p)

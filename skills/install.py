"""Installing skill packs from folders, git and archives: what `loopwright skills install / update` do (the
commands and their output are cli/skill_install.py).

Where packs come from (folders, git, archives) is sources.py; which skills a source offers (marketplaces
included) is plan.py.

Installing: the source is cloned, extracted or read in place; every skill chosen is copied into a staging folder
inside the scope's skills folder (`.staging-<random>`, hidden from discovery, always removed), validated strictly
(invalid skills are left out with their reasons), scanned (`scan/`; an archive is scanned before it is
extracted), hashed, and then moved into `<scope root>/<pack>/<skill>/` with a rename; a skill it replaces goes to
`<scope root>/.previous/<pack>/<skill>/` first, for `rollback`. High findings block unless `--allow-risky`; paths
and links that escape the pack are refused always. Nothing from a pack is run.

`skills.json` (the manifest) and `skills.lock.json` (the lock): see `lock.py`, which also holds `verify`, `rollback`
and `remove` (they need the lock and the folders only). `install --frozen` installs exactly what the lock holds: each
skill from its locked path at its locked commit (fetched by sha; where a branch is now is never looked at), and
fails, installing nothing, when a skill's hash differs from the lock or its path is gone. `update` re-resolves the
refs as typed, shows per skill what changed (a line diff) and applies it with --yes (or a y on a terminal), keeping
the replaced copy for `rollback`; every skill of a source moves to the new commit together (one source, one commit).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from loopwright.skills.catalog import MAX_PACK_SKILLS, SkillError
from loopwright.skills.format import Skill, load_skill, skill_file, validate_skill
from loopwright.skills.lock import (
    HASH_SKIP,
    Out,
    Scope,
    diff_files,
    exclusive,
    hash_tree,
    now,
    read_lock,
    read_manifest,
    write_lock,
    write_manifest,
)
from loopwright.skills.plan import Candidate, Request, plan, select_skills
from loopwright.skills.scan.report import Finding
from loopwright.skills.scan.tree import scan_tree
from loopwright.skills.sources import Source, Staging, Tree, materialize, refuse


@dataclass
class Staged:
    cand: Candidate
    folder: Path
    sha256: str
    files: dict[str, str]
    skill: Skill
    findings: list[Finding]

    @property
    def ref(self) -> str:
        return self.cand.ref


@dataclass
class Prepared:
    req: Request
    staged: list[Staged]
    skipped: list[dict]
    archive_findings: list[Finding]


def _ignore(folder: str, names: list[str]) -> set[str]:
    """Left out of a copy: .git, __pycache__, and files that are not files (FIFOs, devices, sockets)."""
    skip = set()
    for n in names:
        if n in HASH_SKIP:
            skip.add(n)
            continue
        try:
            mode = os.lstat(os.path.join(folder, n)).st_mode
        except OSError:
            skip.add(n)
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skip.add(n)
    return skip


def prepare(req: Request, st: Staging, out: Out) -> Prepared:
    """Resolve, copy into staging, validate, scan and hash every skill `req` asks for; nothing is moved yet."""
    tree = materialize(req.source, st, out)
    return _stage(req, select_skills(plan(tree, req, st, out), req), tree.findings, st, out)


def prepare_locked(req: Request, lock: dict, st: Staging, out: Out) -> Prepared:
    """`prepare` for `install --frozen`: the skills the lock holds for `req`, each taken from its locked path in
    its source at the locked commit (fetched by sha: where a branch is now does not matter)."""
    locked = {ref: e for ref, e in sorted(lock.items()) if e.get("manifest") == req.key
              and (not req.skills or e.get("name") in req.skills)}
    if not locked:
        raise SkillError(f"--frozen: nothing in the lock comes from {req.source.text}; install it without --frozen "
                         f"first")
    trees: dict[tuple, Tree] = {}
    cands: list[Candidate] = []
    findings: list[Finding] = []
    for ref, e in locked.items():
        kind, location, commit = e.get("kind"), e.get("source"), e.get("commit")
        if kind not in ("dir", "git", "archive") or not isinstance(location, str) or (kind == "git") != bool(commit):
            raise SkillError(f"--frozen: the lock entry of {ref} has no usable source and commit; run `loopwright "
                             f"skills update` to rewrite it")
        if (kind, location, commit) not in trees:
            text = req.source.text if location == req.source.location else location
            tree = materialize(Source(text, kind, location, commit), st, out)
            trees[kind, location, commit] = tree
            findings += tree.findings
        tree = trees[kind, location, commit]
        req.scope.skill_dir(e.get("pack"), e.get("name"))  # the lock is data from elsewhere: names checked
        folder = (tree.root / str(e.get("path") or ".")).resolve()
        if (folder != tree.root and tree.root not in folder.parents) or not Path(skill_file(folder)).is_file():
            raise SkillError(f"--frozen: {ref} is in the lock but {location} has no skill at {e.get('path')!r}"
                             + (f" in commit {_short(commit)}" if commit else "")
                             + "; nothing installed (run `loopwright skills update` to move the lock)")
        cands.append(Candidate(e.get("pack"), e.get("name"), folder, tree, str(e.get("path")), e.get("plugin")))
    return _stage(req, cands, findings, st, out)


def _stage(req: Request, cands: list[Candidate], findings: list[Finding], st: Staging, out: Out) -> Prepared:
    staged: list[Staged] = []
    skipped: list[dict] = []
    where: dict[str, str] = {}
    for c in cands:
        if c.ref in where:
            skipped.append({"ref": c.ref, "path": c.subpath, "why": "duplicate", "reasons": [
                f"another skill going to {c.ref} comes from {where[c.ref]}; this one is left out"]})
            continue
        where[c.ref] = c.subpath
        dest = st.path / "out" / c.pack / c.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(c.folder, dest, symlinks=True, ignore=_ignore)
        except (shutil.Error, OSError) as e:
            detail = e.args[0][0][2] if isinstance(e, shutil.Error) and e.args and e.args[0] else e
            raise SkillError(f"cannot copy {c.subpath} from {req.source.text}: {detail}; check the files' "
                             f"permissions") from None
        errors = [d.message for d in validate_skill(dest) if d.level == "error"]
        beyond_spec = [d.message for d in validate_skill(dest, strict=True) if d.level == "error" and d.message
                       not in errors]  # what Claude Code loads although the specification refuses it
        skill, _ = load_skill(dest)
        if errors or skill is None:
            skipped.append({"ref": c.ref, "path": c.subpath, "why": "invalid",
                            "reasons": errors or ["cannot be loaded"]})
            shutil.rmtree(dest)
            continue
        report = scan_tree(dest)
        found = [replace(f, path=f"{c.pack}/{c.name}/{f.path}") for f in report.findings]
        digest, files = hash_tree(dest)
        staged.append(Staged(c, dest, digest, files, skill, found))
        for message in beyond_spec:
            out.say(f"warning {c.ref}: {message} (installed anyway, as Claude Code loads it)")
    for s in skipped:
        out.say(f"skipped {s['ref']} ({s['path']}): {s['why']}: {'; '.join(s['reasons'])}")
    if not staged:
        raise SkillError(f"no valid skill to install from {req.source.text}"
                         + (f" ({len(skipped)} invalid, listed above); fix them" if skipped else
                            "; check --skill, --plugin and the source"))
    return Prepared(req, staged, skipped, findings)


def gate(preps: list[Prepared], out: Out, accepted: set[str] = frozenset()) -> list[Finding]:
    """Refuse escaping paths always; block high findings unless --allow-risky (or accepted before, same hash)."""
    findings = [f for p in preps for f in p.archive_findings]
    findings += [f for p in preps for s in p.staged for f in s.findings]
    if not findings:
        return []
    counts = {sev: sum(f.severity == sev for f in findings) for sev in ("high", "medium", "low")}
    out.say(f"scan: {counts['high']} high, {counts['medium']} medium, {counts['low']} low")
    refuse(findings, out)
    allow = any(p.req.allow_risky for p in preps)
    blocking = [f for p in preps for f in p.archive_findings if f.severity == "high"]
    blocking += [f for p in preps for s in p.staged if s.ref not in accepted for f in s.findings
                 if f.severity == "high"]
    if blocking and not allow:
        out.findings(findings, refused=True)
        raise SkillError(f"blocked: {len(blocking)} high-risk finding(s) (listed above); read those files, then "
                         f"rerun with --allow-risky to install anyway")
    out.findings(findings, refused=False)
    return findings


# -- moving into place and the lock ---------------------------------------------------------------------


def _put(scope: Scope, s: Staged, entry: dict | None) -> dict | None:
    """Move a staged skill into place; the copy it replaces goes to .previous/ (replacing an older one there).

    Returns the lock entry to keep as `previous`: the replaced one, or (nothing replaced) the one kept before.
    """
    dest = scope.skill_dir(s.cand.pack, s.cand.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    moved = dest.exists() or dest.is_symlink()
    if moved:
        prev = scope.previous_dir(s.cand.pack, s.cand.name)
        if prev.is_symlink():
            prev.unlink()
        elif prev.exists():
            shutil.rmtree(prev)
        prev.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dest, prev)
    os.replace(s.folder, dest)
    return entry if moved else (entry or {}).get("previous")


def _lock_entry(s: Staged, req: Request, previous: dict | None, risky: bool) -> dict:
    tree = s.cand.tree
    entry = {"source": tree.source.location, "kind": tree.source.kind, "ref": tree.source.ref,
             "commit": tree.commit, "path": s.cand.subpath, "sha256": s.sha256, "files": s.files,
             "name": s.skill.name, "pack": s.cand.pack, "version": s.skill.metadata.get("version"),
             "installed_at": now(), "manifest": req.key, "plugin": s.cand.plugin, "risky": risky}
    if previous:
        entry["previous"] = {k: v for k, v in previous.items() if k != "previous"}
    return entry


def _manifest_entry(req: Request, old: dict | None) -> dict:
    skills = req.skills
    if skills is not None and old is not None:
        skills = None if old.get("skills") is None else sorted(set(old["skills"]) | set(skills))
    exclude = [] if req.skills is None else [n for n in (old or {}).get("exclude", []) if n not in req.skills]
    return {"source": req.source.location, "kind": req.source.kind, "typed": req.source.text, "ref": req.source.ref,
            "scope": req.scope.name, "pack": req.name, "skills": sorted(skills) if skills is not None else None,
            "plugins": sorted(req.plugins) if req.plugins else (old or {}).get("plugins"), "exclude": exclude}


def request_from_manifest(scope: Scope, entry: dict, allow_risky: bool = False) -> Request:
    src = Source(entry.get("typed") or entry["source"], entry["kind"], entry["source"], entry.get("ref"))
    return Request(scope, src, entry.get("pack"), entry.get("skills"), entry.get("plugins"),
                   list(entry.get("exclude") or []), allow_risky)


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "(none)"


def _check_frozen(prep: Prepared, lock: dict) -> list[str]:
    problems = []
    for s in prep.staged:
        e = lock[s.ref]
        if e.get("sha256") != s.sha256:
            added, removed, changed = diff_files(e.get("files") or {}, s.files)
            what = ", ".join([f"+{p}" for p in added] + [f"-{p}" for p in removed] + [f"~{p}" for p in changed])
            problems.append(f"{s.ref}: content differs from the lock ({what or 'hash'})")
    problems += [f"{sk['ref']}: {'; '.join(sk['reasons'])}" for sk in prep.skipped]
    return problems


def install(scope: Scope, reqs: list[Request], out: Out, frozen: bool = False,
            max_pack_skills: int = MAX_PACK_SKILLS) -> dict:
    """Install every request into `scope`: all are prepared and checked before anything is moved. A pack of more
    than `max_pack_skills` skills installs with a warning (in `result["warnings"]`)."""
    result: dict = {"scope": scope.name, "root": str(scope.root), "installed": [], "unchanged": [], "skipped": [],
                    "warnings": []}
    with exclusive(scope), Staging(scope) as st:
        lock, manifest = read_lock(scope), read_manifest(scope)
        preps = [prepare_locked(r, lock, st, out) if frozen else prepare(r, st, out) for r in reqs]
        for p in preps:
            result["skipped"] += p.skipped
        for pack, n in sorted(Counter(s.cand.pack for p in preps for s in p.staged).items()):
            if n > max_pack_skills:
                result["warnings"].append(f"pack {pack} holds {n} skills, more than [skills] max_pack_skills "
                                          f"({max_pack_skills}): agents' catalog lists them after the bundled, "
                                          f"project and smaller packs' skills; install only what you need with "
                                          f"--skill or --plugin")
        accepted: set[str] = set()
        if frozen:
            problems = [msg for p in preps for msg in _check_frozen(p, lock)]
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                raise SkillError(f"--frozen: {'; '.join(problems[:3])}{more}; nothing installed (run `loopwright "
                                 f"skills update` to move the lock, or install without --frozen)")
            accepted = {s.ref for p in preps for s in p.staged if lock[s.ref].get("risky")}
        result["findings"] = [f.__dict__ for f in gate(preps, out, accepted)]
        for p in preps:  # conflicts, before anything moves
            for s in p.staged:
                entry, dest = lock.get(s.ref), scope.skill_dir(s.cand.pack, s.cand.name)
                if entry is not None and entry.get("manifest") != p.req.key:
                    raise SkillError(f"{s.ref} is already installed from {entry.get('source')}; remove it first "
                                     f"(`loopwright skills remove {s.ref}`) or install under another --name")
                if entry is None and (dest.exists() or dest.is_symlink()):
                    raise SkillError(f"{dest} exists and was not installed by `loopwright skills install`; move "
                                     f"it away or install under another --name")
        for p in preps:
            for s in p.staged:
                entry, dest = lock.get(s.ref), scope.skill_dir(s.cand.pack, s.cand.name)
                row = {"ref": s.ref, "path": str(dest), "version": s.skill.metadata.get("version"),
                       "commit": s.cand.tree.commit, "sha256": s.sha256}
                if entry is not None and entry.get("sha256") == s.sha256 and dest.is_dir() \
                        and hash_tree(dest)[0] == s.sha256:
                    result["unchanged"].append(row)
                    if not frozen:
                        lock[s.ref] = {**entry, "commit": s.cand.tree.commit, "ref": s.cand.tree.source.ref}
                    continue
                previous = _put(scope, s, entry)
                result["installed"].append(row)
                if not frozen:
                    lock[s.ref] = _lock_entry(s, p.req, previous, any(f.severity == "high" for f in s.findings))
            if not frozen:
                manifest[p.req.key] = _manifest_entry(p.req, manifest.get(p.req.key))
        if not frozen:
            write_lock(scope, lock)
            write_manifest(scope, manifest)
    return result


# -- update, verify, rollback, remove ----------------------------------------------------------------------


def _scripts(paths: list[str], *folders: Path) -> list[str]:
    def executable(p: str) -> bool:
        return any((f / p).is_file() and os.access(f / p, os.X_OK) for f in folders)
    return [p for p in paths if p.startswith("scripts/") or executable(p)]


DIFF_LINES = 200  # per file other than SKILL.md and scripts, which are shown whole
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _text(path: Path) -> list[str] | None:
    """The lines of a text file (a link: its target), control characters escaped (a pack's bytes must not drive the
    terminal); [] when there is no file, None for a binary one."""
    if path.is_symlink():
        text = f"(a link to {os.readlink(path)})"
    elif not path.is_file():
        return []
    else:
        data = path.read_bytes()
        if b"\0" in data:
            return None
        text = data.decode("utf-8", "replace")
    return [_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line) for line in text.splitlines()]


def _line_diff(old: Path, new: Path, paths: list[str], scripts: list[str]) -> list[str]:
    """A unified diff of each of `paths` between the folders `old` (installed) and `new` (staged)."""
    lines: list[str] = []
    for rel in paths:
        a, b = _text(old / rel), _text(new / rel)
        if a is None or b is None:
            lines.append(f"binary {rel}: {_size(old / rel)} -> {_size(new / rel)}")
            continue
        diff = list(difflib.unified_diff(a, b, f"a/{rel}", f"b/{rel}", lineterm="", n=2))
        if rel not in scripts and rel.lower() != "skill.md" and len(diff) > DIFF_LINES:
            diff = diff[:DIFF_LINES] + [f"... {len(diff) - DIFF_LINES} more diff lines of {rel}"]
        lines += diff
    return lines


def _size(path: Path) -> str:
    return f"{path.lstat().st_size} bytes" if path.exists() or path.is_symlink() else "none"


def _changes(scope: Scope, prep: Prepared, lock: dict) -> tuple[list[dict], list[str]]:
    changes, gone = [], []
    # sources whose skills carry no version at all (Anthropic's) are not warned about unchanged versions
    versioned = any(s.skill.metadata.get("version") for s in prep.staged) or any(
        e.get("version") for e in lock.values() if e.get("manifest") == prep.req.key)
    for s in prep.staged:
        entry, dest = lock.get(s.ref), scope.skill_dir(s.cand.pack, s.cand.name)
        if entry is None:
            scripts = _scripts(sorted(s.files), s.folder)
            changes.append({"ref": s.ref, "scope": scope.name, "kind": "new", "staged": s, "added": sorted(s.files),
                            "removed": [], "changed": [], "scripts": scripts,
                            "diff": _line_diff(dest, s.folder, sorted(s.files), scripts),
                            "version": [None, s.skill.metadata.get("version")], "description": [None,
                                                                                               s.skill.description]})
            continue
        old_hash, old_files = hash_tree(dest) if dest.is_dir() else (entry.get("sha256"), entry.get("files") or {})
        if old_hash == s.sha256:
            continue
        added, removed, changed = diff_files(old_files, s.files)
        old_skill = load_skill(dest)[0] if dest.is_dir() else None
        before = [entry.get("version"), old_skill.description if old_skill else None]
        version = s.skill.metadata.get("version")
        moved = s.sha256 != entry.get("sha256")  # else the source is as locked and the copy on disk was edited
        scripts = _scripts(added + removed + changed, s.folder, dest)
        changes.append({"ref": s.ref, "scope": scope.name, "kind": "changed" if moved else "restore", "staged": s,
                        "added": added, "removed": removed, "changed": changed, "scripts": scripts,
                        "diff": _line_diff(dest, s.folder, sorted(added + removed + changed), scripts),
                        "version": [before[0], version], "description": [before[1], s.skill.description],
                        "commit": [entry.get("commit"), s.cand.tree.commit],
                        "same_version": moved and versioned and before[0] == version})
    staged = {s.ref for s in prep.staged}
    gone = [ref for ref, e in sorted(lock.items()) if e.get("manifest") == prep.req.key and ref not in staged]
    return changes, gone


def _show_change(c: dict, out: Out) -> None:
    v0, v1 = c["version"]
    if c["kind"] == "new":
        out.say(f"new {c['ref']} (version {v1 or 'none'}): {len(c['added'])} file(s)")
    else:
        commits = c.get("commit") or [None, None]
        moved = f", commit {_short(commits[0])} -> {_short(commits[1])}" if commits[0] != commits[1] else ""
        what = "changed" if c["kind"] == "changed" else "edited on disk (the update restores the locked copy):"
        out.say(f"{what} {c['ref']}: version {v0 or 'none'} -> {v1 or 'none'}{moved}")
        for sign, key in (("+", "added"), ("-", "removed"), ("~", "changed")):
            for p in c[key]:
                out.say(f"  {sign} {p}" + ("  [script]" if p in c["scripts"] else ""))
        d0, d1 = (" ".join((d or "").split()) for d in c["description"])
        if d0 != d1:
            out.say(f"  description before: {d0}")
            out.say(f"  description after:  {d1}")
    for line in c["diff"]:
        out.say(f"    {line}")
    if c["scripts"]:
        out.say(f"  scripts changed: {', '.join(c['scripts'])} (read them: agents run them)")
    if c.get("same_version"):
        out.say(f"  WARNING: {c['ref']}: content changed without a version change (metadata.version "
                f"{v1 or 'none'}): what you accepted before is not what you get now")


def _targets(scope: Scope, name: str | None, out: Out) -> list[str]:
    """The manifest keys to update in `scope`: every source, the one named, or those of a named skill or pack
    (one source, one commit: the skills of a source move together)."""
    manifest, lock = read_manifest(scope), read_lock(scope)
    if name is None:
        return sorted(manifest)
    keys = [k for k, e in manifest.items() if name in (k, e.get("typed"), e.get("source"))]
    if keys:
        return sorted(keys)
    keys = sorted({e.get("manifest") for ref, e in lock.items() if name in (ref, e.get("name"), e.get("pack"))}
                  & set(manifest))
    for k in keys:
        out.say(f"{name} comes from {manifest[k].get('typed') or k}: every skill of that source updates with it "
                f"(one source, one commit)")
    return keys


def _move_commits(lock: dict, prep: Prepared, changed: set[str], out: Out) -> bool:
    """Point the lock entries of `prep`'s unchanged skills at the commit they were just read from (one source, one
    commit); True when any moved."""
    moved = False
    for s in prep.staged:
        entry = lock.get(s.ref)
        if s.ref in changed or entry is None or (entry.get("commit"), entry.get("ref")) == (
                s.cand.tree.commit, s.cand.tree.source.ref):
            continue
        lock[s.ref] = {**entry, "commit": s.cand.tree.commit, "ref": s.cand.tree.source.ref}
        out.say(f"{s.ref}: unchanged, now at commit {_short(s.cand.tree.commit)}")
        moved = True
    return moved


def update(scopes: list[Scope], name: str | None, allow_risky: bool, out: Out,
           confirm: Callable[[int], bool]) -> dict:
    """Re-resolve the sources installed in `scopes` (all, or those of `name`: a skill, a pack or a source), say per
    skill what changed, line by line, and apply the changes once `confirm(number of changes)` agrees (the replaced
    copies kept for rollback). Every skill of an updated source moves to the commit read, changed or not.
    `{"changes": [...], "applied": bool}`; no changes: nothing asked, nothing applied but the commits."""
    targets = [(scope, _targets(scope, name, out)) for scope in scopes]
    targets = [t for t in targets if t[1]]
    if not targets:
        raise SkillError(f"no installed skill or source named '{name}'; see `loopwright skills list`" if name else
                         "nothing was installed with `loopwright skills install`; nothing to update")
    result: dict = {"changes": [], "applied": False}
    with contextlib.ExitStack() as stack:
        todo: list[tuple[Scope, dict, Prepared, list[dict]]] = []
        for scope, keys in targets:
            stack.enter_context(exclusive(scope))
            st = stack.enter_context(Staging(scope))
            manifest, lock = read_manifest(scope), read_lock(scope)
            for key in keys:
                prep = prepare(request_from_manifest(scope, manifest[key], allow_risky), st, out)
                changes, gone = _changes(scope, prep, lock)
                for ref in gone:
                    out.say(f"{ref}: no longer in its source (kept; `loopwright skills remove {ref}` removes it)")
                todo.append((scope, lock, prep, changes))
        all_changes = [c for *_, cs in todo for c in cs]
        result["changes"] = [{k: v for k, v in c.items() if k != "staged"} for c in all_changes]
        if not all_changes:
            moved = {scope: lock for scope, lock, prep, _ in todo if _move_commits(lock, prep, set(), out)}
            for scope, lock in moved.items():
                write_lock(scope, lock)
            out.say("up to date")
            return result
        for c in all_changes:
            _show_change(c, out)
        gate([p for _, _, p, cs in todo if cs], out)
        if not confirm(len(all_changes)):
            return result
        written: dict[Scope, dict] = {}
        for scope, lock, prep, changes in todo:
            for c in changes:
                s = c["staged"]
                previous = _put(scope, s, lock.get(s.ref))
                lock[s.ref] = _lock_entry(s, prep.req, previous, any(f.severity == "high" for f in s.findings))
                out.say(f"updated {s.ref}" + (" (the previous copy is kept: `loopwright skills rollback "
                                              f"{s.ref}`)" if c["kind"] != "new" else ""))
            if _move_commits(lock, prep, {c["ref"] for c in changes}, out) or changes:
                written[scope] = lock
        for scope, lock in written.items():
            write_lock(scope, lock)
        result["applied"] = True
    return result

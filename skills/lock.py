"""Where installed skills live and what was installed: scopes, the manifest, the lock and the tree hash.

Two files sit beside each scope's skills folder: `skills.json`, the manifest (what the user asked for: the
source, the ref as typed, the pack name, the skill filter), and `skills.lock.json`, the lock (per installed
`pack:skill`: where it came from, the resolved commit, its path in the source and the hash of its files). The user
scope keeps them in `loopwright_home()`, the project scope in `<repo>/.loopwright/` (committable). Both are written
atomically (a temporary file, then a rename), with sorted keys, so diffs of them stay small.

The tree hash of a skill folder is defined once, here: for each file, in sorted order of its relative path
written with `/`, feed `path\\0` + its bytes + `\\0` to SHA-256. A symlink is hashed as its target text. `.git`
and `__pycache__` folders are not part of a skill and are left out (an agent running a skill's script may
create `__pycache__`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loopwright.memory.paths import loopwright_home
from loopwright.skills.catalog import BUNDLED_DIR, SkillError
from loopwright.skills.format import skill_file

MANIFEST_FILE = "skills.json"
LOCK_FILE = "skills.lock.json"
PREVIOUS_DIR = ".previous"
HASH_SKIP = frozenset({".git", "__pycache__"})
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Scope:
    name: str  # "user" or "project"
    root: Path  # the skills folder: <root>/<pack>/<skill>/
    meta: Path  # the folder holding skills.json and skills.lock.json
    project: Path | None = None

    @property
    def manifest_path(self) -> Path:
        return self.meta / MANIFEST_FILE

    @property
    def lock_path(self) -> Path:
        return self.meta / LOCK_FILE

    def skill_dir(self, pack: str, name: str) -> Path:
        return self.root / _component(pack) / _component(name)

    def previous_dir(self, pack: str, name: str) -> Path:
        return self.root / PREVIOUS_DIR / _component(pack) / _component(name)


_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _component(part: object) -> str:
    """A pack or skill name used as a folder name: never '..', a path or hidden (a project's lock comes with the
    repository, so its names are not trusted)."""
    if not isinstance(part, str) or not _COMPONENT.fullmatch(part) or part in (".", ".."):
        raise SkillError(f"{part!r} is not a usable pack or skill folder name; fix or remove that entry of the lock")
    return part


def user_scope() -> Scope:
    home = loopwright_home()
    return Scope("user", home / "skills", home)


def project_scope(project_root: Path | None) -> Scope:
    if project_root is None:
        raise SkillError("not inside a git repository: project skills go in <repo>/.loopwright/skills; "
                         "run this in a repository or use --user")
    return Scope("project", project_root / ".loopwright" / "skills", project_root / ".loopwright", project_root)


# -- the tree hash ---------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[tuple[str, str]]:
    """(relative posix path, absolute path) of every file and symlink under `folder`; HASH_SKIP folders left out."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        rel_dir = os.path.relpath(dirpath, folder)
        prefix = "" if rel_dir == "." else Path(rel_dir).as_posix() + "/"
        keep = []
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                yield prefix + d, full  # a symlinked folder is a link, not a folder to enter
            elif d not in HASH_SKIP:
                keep.append(d)
        dirnames[:] = keep
        for f in filenames:
            yield prefix + f, os.path.join(dirpath, f)


def hash_tree(folder: Path) -> tuple[str, dict[str, str]]:
    """(the tree hash of `folder`, {relative path: sha256 of that file's bytes or link target})."""
    total = hashlib.sha256()
    files: dict[str, str] = {}
    for rel, full in sorted(_walk(Path(folder))):
        st = os.lstat(full)
        one = hashlib.sha256()
        total.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if stat.S_ISLNK(st.st_mode):
            data = os.fsencode(os.readlink(full))
            total.update(data)
            one.update(data)
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                while chunk := f.read(1 << 20):
                    total.update(chunk)
                    one.update(chunk)
        total.update(b"\0")
        files[rel] = one.hexdigest()
    return total.hexdigest(), files


def diff_files(old: dict[str, str], new: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, changed) relative paths between two `hash_tree` file maps."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(p for p in set(old) & set(new) if old[p] != new[p])
    return added, removed, changed


# -- manifest and lock files -----------------------------------------------------------------------


def read_json(path: Path, key: str) -> dict:
    """The `key` mapping of a manifest or lock file ({} when the file does not exist)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise SkillError(f"cannot read {path}: {e}; fix the file or move it away") from None
    section = data.get(key) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise SkillError(f"{path} has no '{key}' object; fix the file or move it away")
    return section


def write_json(path: Path, key: str, section: dict) -> None:
    """Write `{"version": 1, key: section}` atomically, keys sorted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": FORMAT_VERSION, key: section}, indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(scope: Scope) -> dict:
    return read_json(scope.manifest_path, "sources")


def write_manifest(scope: Scope, sources: dict) -> None:
    write_json(scope.manifest_path, "sources", sources)


def read_lock(scope: Scope) -> dict:
    return read_json(scope.lock_path, "skills")


def write_lock(scope: Scope, skills: dict) -> None:
    write_json(scope.lock_path, "skills", skills)


@contextlib.contextmanager
def exclusive(scope: Scope) -> Iterator[None]:
    """Hold the scope's lock file while changing it, so two installs at once do not lose each other's entries."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    scope.meta.mkdir(parents=True, exist_ok=True)
    with open(scope.meta / ".skills.flock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def find_locked(scopes: list[Scope], name: str) -> tuple[Scope, str, dict]:
    """The lock entry for `pack:skill` or a skill name in the first of `scopes` that has it.

    SkillError when the name is ambiguous, LookupError when no scope has it.
    """
    hits: list[tuple[Scope, str, dict]] = []
    for scope in scopes:
        lock = read_lock(scope)
        if name in lock:
            return scope, name, lock[name]
        hits += [(scope, ref, e) for ref, e in sorted(lock.items()) if e.get("name") == name]
    if len(hits) > 1:
        refs = ", ".join(f"{ref} ({s.name})" for s, ref, _ in hits)
        raise SkillError(f"'{name}' is ambiguous: {refs}; give it as pack:skill (and --user or --project)")
    if not hits:
        raise LookupError(name)
    return hits[0]


class Out:
    """Where install, update, verify, rollback and remove report as they go: a line at a time, and the scan
    findings they list. This one keeps quiet; the command line's (cli/skill_install.py) prints."""

    def say(self, text: str = "") -> None:
        """One line of progress for a person."""

    def findings(self, findings: list, *, refused: bool) -> None:
        """Scan findings (`scan.Finding`s): `refused`, they are why nothing is installed (listed before the error
        says so); else they are listed for reading and the install goes on."""


# -- verify, rollback, remove: the lock and the folders alone ------------------------------------------


def verify(scopes: list[Scope], out: Out) -> tuple[int, list[dict]]:
    rows = []
    for scope in scopes:
        for ref, e in sorted(read_lock(scope).items()):
            dest = scope.skill_dir(e.get("pack", ref.partition(":")[0]), e.get("name", ref.partition(":")[2]))
            row = {"ref": ref, "scope": scope.name, "path": str(dest)}
            if not dest.is_dir():
                row["status"] = "missing"
                out.say(f"missing  {ref} ({scope.name}): {dest} is gone")
            else:
                digest, files = hash_tree(dest)
                if digest == e.get("sha256"):
                    row["status"] = "ok"
                    out.say(f"ok       {ref} ({scope.name})")
                else:
                    added, removed, changed = diff_files(e.get("files") or {}, files)
                    row.update(status="changed", added=added, removed=removed, changed=changed)
                    what = ", ".join([f"+{p}" for p in added] + [f"-{p}" for p in removed] + [f"~{p}" for p in changed])
                    out.say(f"changed  {ref} ({scope.name}): {what or 'content differs'}")
            rows.append(row)
    if not rows:
        out.say("nothing was installed with `loopwright skills install`")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        out.say(f"{len(bad)} of {len(rows)} skill(s) differ from the lock; reinstall them with "
                f"`loopwright skills install --frozen`")
    return (1 if bad else 0), rows


def _locked(scopes: list[Scope], name: str) -> tuple[Scope, str, dict]:
    try:
        return find_locked(scopes, name)
    except LookupError:
        pass
    bundled = BUNDLED_DIR / name.rpartition(":")[2]
    if Path(skill_file(bundled)).is_file():
        raise SkillError(f"'{name}' is a bundled skill, not one installed with `loopwright skills install`; hide "
                         f"it with `loopwright skills disable {name.rpartition(':')[2]}`")
    raise SkillError(f"'{name}' was not installed with `loopwright skills install` (in the "
                     f"{' or '.join(s.name for s in scopes)} scope); see `loopwright skills list`")


def rollback(scopes: list[Scope], name: str, out: Out) -> dict:
    scope, ref, entry = _locked(scopes, name)
    with exclusive(scope):
        lock = read_lock(scope)
        entry = lock[ref]
        pack, skill = entry["pack"], entry["name"]
        dest, prev = scope.skill_dir(pack, skill), scope.previous_dir(pack, skill)
        if not prev.is_dir() or not entry.get("previous"):
            raise SkillError(f"nothing to roll back for {ref}: no earlier copy is kept (one is kept when install "
                             f"or update replaces a skill)")
        swap = prev.parent / f".swap-{secrets.token_hex(4)}"
        if dest.exists():
            os.replace(dest, swap)
        os.replace(prev, dest)
        if swap.exists():
            os.replace(swap, prev)
        current = {k: v for k, v in entry.items() if k != "previous"}
        lock[ref] = {**entry["previous"], "previous": current}
        write_lock(scope, lock)
    back = lock[ref]
    out.say(f"rolled back {ref} to version {back.get('version') or 'none'} (sha256 {back['sha256'][:12]}); "
            f"roll back again to return to the newer copy")
    return {"ref": ref, "scope": scope.name, "sha256": back["sha256"], "version": back.get("version")}


def remove(scopes: list[Scope], name: str, out: Out) -> dict:
    scope, ref, entry = _locked(scopes, name)
    with exclusive(scope):
        lock, manifest = read_lock(scope), read_manifest(scope)
        entry = lock.pop(ref)
        pack, skill = entry["pack"], entry["name"]
        for folder in (scope.skill_dir(pack, skill), scope.previous_dir(pack, skill)):
            if folder.is_symlink():
                folder.unlink()
            elif folder.exists():
                shutil.rmtree(folder)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # the pack's last skill takes the pack folder with it
        with contextlib.suppress(OSError):
            (scope.root / PREVIOUS_DIR).rmdir()
        key = entry.get("manifest")
        if key in manifest:
            if not any(e.get("manifest") == key for e in lock.values()):
                del manifest[key]
            elif manifest[key].get("skills") is not None:
                manifest[key]["skills"] = [n for n in manifest[key]["skills"] if n != skill]
            else:
                manifest[key]["exclude"] = sorted(set(manifest[key].get("exclude") or []) | {ref})
        write_lock(scope, lock)
        write_manifest(scope, manifest)
    out.say(f"removed {ref} ({scope.name} scope)")
    return {"ref": ref, "scope": scope.name, "removed": True}

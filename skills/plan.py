"""What to install from a source's files: the skill folders in it, or, when it holds
`.claude-plugin/marketplace.json`, a marketplace's: each plugin becomes a pack, its skills taken from the plugin's
explicit `skills` paths or else from its `skills/` folder; plugins hosted elsewhere (`{"source": "github" | "url" |
"git-subdir", ...}`) are cloned as git URLs. Then `--skill`, `--plugin` and the skills removed before choose among
them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.skills.catalog import SkillError, skill_folders
from loopwright.skills.format import SKILL_FILE, load_skill, skill_file
from loopwright.skills.lock import Out, Scope
from loopwright.skills.sources import Source, Staging, Tree, default_pack, is_git_url, materialize, sanitize

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class Candidate:
    pack: str
    name: str
    folder: Path
    tree: Tree
    subpath: str
    plugin: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.pack}:{self.name}"


@dataclass
class Request:
    scope: Scope
    source: Source
    name: str | None = None  # --name
    skills: list[str] | None = None  # --skill
    plugins: list[str] | None = None  # --plugin
    exclude: list[str] = field(default_factory=list)  # removed with `skills remove`
    allow_risky: bool = False

    @property
    def key(self) -> str:
        """The manifest key: the source without its ref, and the pack name when one was given."""
        return self.source.location + (f"#{self.name}" if self.name else "")


def _inside(root: Path, base: Path, rel: object, what: str) -> Path:
    """`base / rel`, which must stay inside `root` (symlinks followed)."""
    if not isinstance(rel, str) or not rel.strip():
        raise SkillError(f"{what} must be a relative path string like './skills/name'; fix "
                         f".claude-plugin/marketplace.json")
    path = (base / rel).resolve()
    if path != root and root not in path.parents:
        raise SkillError(f"{what} '{rel}' points outside the repository; fix .claude-plugin/marketplace.json")
    return path


def _skills_under(folder: Path) -> list[Path]:
    """Skill folders under `folder`; one inside another skill is part of that skill, not a skill of its own."""
    found = set(skill_folders(folder)[0])
    return sorted(f for f in found if not any(p in found for p in f.parents))


def _candidates(tree: Tree, base_root: Path, folders: list[Path], pack: str, plugin: str | None) -> list[Candidate]:
    out = []
    for folder in folders:
        if folder == base_root:  # a skill at the top of its source: the folder name means nothing, use its name
            skill, _ = load_skill(folder)
            declared = skill.name if skill else folder.name
            name = declared if _SAFE_NAME.fullmatch(declared) else sanitize(declared)
        else:
            name = folder.name
        sub = Path(os.path.relpath(folder, tree.root)).as_posix()
        out.append(Candidate(pack, name, folder, tree, sub, plugin))
    return out


def plan(tree: Tree, req: Request, st: Staging, out: Out) -> list[Candidate]:
    marketplace = tree.root / ".claude-plugin" / "marketplace.json"
    if marketplace.is_file():
        return _marketplace(tree, marketplace, req, st, out)
    if req.plugins:
        raise SkillError(f"--plugin is for marketplaces, and {req.source.text} has no .claude-plugin/marketplace.json")
    folders = _skills_under(tree.root)
    if not folders:
        raise SkillError(f"no {SKILL_FILE} in {req.source.text}; a skill is a folder holding {SKILL_FILE} "
                         f"(check the path or the ref)")
    return _candidates(tree, tree.root, folders, req.name or default_pack(req.source), None)


def _marketplace(tree: Tree, path: Path, req: Request, st: Staging, out: Out) -> list[Candidate]:
    where = f"{req.source.text}: .claude-plugin/marketplace.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SkillError(f"{where} cannot be read as JSON ({e}); fix it") from None
    if not isinstance(data, dict):
        raise SkillError(f"{where} must be a JSON object with a 'plugins' list; fix it")
    plugins = data.get("plugins")
    if not isinstance(plugins, list):
        raise SkillError(f"{where}: 'plugins' must be a list of plugin objects; fix it")
    entries = []
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"].strip():
            raise SkillError(f"{where}: plugins[{i}] must be an object with a 'name'; fix it")
        skills = p.get("skills")
        if isinstance(skills, str):
            skills = [skills]
        if skills is not None and not (isinstance(skills, list) and all(isinstance(s, str) for s in skills)):
            raise SkillError(f"{where}: plugin '{p['name']}': 'skills' must be a list of paths; fix it")
        source = p.get("source", "./")
        if not isinstance(source, (str, dict)):
            raise SkillError(f"{where}: plugin '{p['name']}': 'source' must be a path or an object; fix it")
        entries.append((p["name"].strip(), source, skills))
    names = [n for n, _, _ in entries]
    if req.plugins:
        unknown = [n for n in req.plugins if n not in names]
        if unknown:
            raise SkillError(f"no plugin named {', '.join(unknown)} in {req.source.text}; its plugins: "
                             f"{', '.join(names) or '(none)'}")
        entries = [e for e in entries if e[0] in req.plugins]
    out.say(f"marketplace {data.get('name') or req.source.text}: {len(entries)} plugin(s)")
    result: list[Candidate] = []
    for name, source, skills in entries:
        if isinstance(source, str):
            ptree, base = tree, _inside(tree.root, tree.root, source, f"plugin '{name}' source")
        else:
            remote = _remote_plugin(name, source, where, out)
            if remote is None:
                continue
            ptree = materialize(remote[0], st, out)
            base = _inside(ptree.root, ptree.root, remote[1], f"plugin '{name}' path") if remote[1] else ptree.root
        if skills is not None:
            paths = [_inside(ptree.root, base, s, f"plugin '{name}' skills path") for s in skills]
        else:
            alone = [base] if Path(skill_file(base)).is_file() else []
            paths = [base / "skills"] if (base / "skills").is_dir() else alone
            if not paths:
                out.say(f"  plugin {name}: no skills/ folder and no 'skills' paths; nothing to install from it")
        folders: list[Path] = []
        for p in paths:
            if not p.is_dir():
                out.say(f"  plugin {name}: skills path {Path(os.path.relpath(p, ptree.root)).as_posix()} "
                        f"does not exist; left out")
                continue
            folders += [f for f in _skills_under(p) if f not in folders]
        cands = _candidates(ptree, ptree.root, folders, req.name or sanitize(name), name)
        out.say(f"  plugin {name}: {', '.join(c.name for c in cands) or '(no skills)'}")
        result += cands
    return result


def _remote_plugin(name: str, source: dict, where: str, out: Out) -> tuple[Source, str | None] | None:
    kind = source.get("source")
    url = source.get("url")
    if kind in ("github", "git-subdir") and not url:
        repo = source.get("repo")
        if not isinstance(repo, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise SkillError(f"{where}: plugin '{name}': 'repo' must be owner/name; fix it")
        url = f"https://github.com/{repo.removesuffix('.git')}.git"
    elif kind not in ("url", "git", "git-subdir"):
        out.say(f"  plugin {name}: source type {kind!r} is not supported (relative paths, github, url and "
                f"git-subdir are); left out")
        return None
    if not isinstance(url, str) or not is_git_url(url):
        raise SkillError(f"{where}: plugin '{name}': 'url' must be a git URL; fix it")
    ref = source.get("sha") or source.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise SkillError(f"{where}: plugin '{name}': 'ref' and 'sha' must be strings; fix it")
    sub = source.get("path") if kind == "git-subdir" else None
    if sub is not None and not isinstance(sub, str):
        raise SkillError(f"{where}: plugin '{name}': 'path' must be a string; fix it")
    return Source(url + (f"@{ref}" if ref else ""), "git", url, ref), sub


def select_skills(cands: list[Candidate], req: Request) -> list[Candidate]:
    if req.skills:
        known = sorted({c.name for c in cands})
        unknown = [n for n in req.skills if n not in known]
        if unknown:
            raise SkillError(f"no skill named {', '.join(unknown)} in {req.source.text}; the skills there: "
                             f"{', '.join(known) or '(none)'}")
        cands = [c for c in cands if c.name in req.skills]
    return [c for c in cands if c.ref not in req.exclude and c.name not in req.exclude]


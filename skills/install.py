"""Installing skill packs from folders, git and archives: what `loopwright skills install / update` do (the
commands and their output are cli/skill_install.py).

A source is a local folder, a git URL (https://, ssh://, git://, file://, git@host:path) with an optional `@ref`
(branch, tag or commit, resolved to the 40-character commit; the default branch without one), or a .zip /
.tar.gz / .tgz archive on disk. A source holding `.claude-plugin/marketplace.json` is a marketplace: each plugin
becomes a pack, its skills taken from the plugin's explicit `skills` paths or else from its `skills/` folder;
plugins hosted elsewhere (`{"source": "github" | "url" | "git-subdir", ...}`) are cloned as git URLs.

Installing: the source is cloned, extracted or read in place; every skill chosen is copied into a staging folder
inside the scope's skills folder (`.staging-<random>`, hidden from discovery, always removed), validated strictly
(invalid skills are left out with their reasons), scanned (`scan/`; an archive is scanned before it is
extracted), hashed, and then moved into `<scope root>/<pack>/<skill>/` with a rename; a skill it replaces goes to
`<scope root>/.previous/<pack>/<skill>/` first, for `rollback`. High findings block unless `--allow-risky`; paths
and links that escape the pack are refused always. Nothing from a pack is run: git runs with hooks, LFS and other
filters, and the ext transport disabled, and nothing is installed from submodules.

`skills.json` (the manifest) and `skills.lock.json` (the lock): see `lock.py`, which also holds `verify`, `rollback`
and `remove` (they need the lock and the folders only). `install --frozen` installs exactly what the lock holds and
fails, installing nothing, when a source's ref now resolves to another commit (a moved branch), a skill's hash
differs from the lock, or a skill is in one but not the other. `update` re-resolves the refs as typed, shows per
skill what changed and applies it with --yes (or a y on a terminal), keeping the replaced copy for `rollback`.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.skills.catalog import SkillError, skill_folders
from loopwright.skills.format import SKILL_FILE, Skill, load_skill, validate_skill
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
from loopwright.skills.scan.archives import scan_archive
from loopwright.skills.scan.limits import MAX_TOTAL_UNCOMPRESSED
from loopwright.skills.scan.report import Finding
from loopwright.skills.scan.tree import scan_tree

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
REFUSED_RULES = frozenset({"archive-path-escape", "symlink-escape", "archive-bomb"})  # not even with --allow-risky
_URL_RE = re.compile(r"^(?:https?|ssh|git|file)://", re.I)
_SCP_RE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
# git configuration for every git command here: no hooks, no filters (LFS), no ext:: transport, no prompts
_GIT_CONFIG = {"core.hooksPath": os.devnull, "core.fsmonitor": "false", "filter.lfs.smudge": "",
               "filter.lfs.process": "", "filter.lfs.required": "false", "protocol.ext.allow": "never",
               "submodule.recurse": "false", "advice.detachedHead": "false"}


# -- sources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    text: str  # as typed
    kind: str  # "dir", "git" or "archive"
    location: str  # absolute path, or the git URL without the ref
    ref: str | None = None  # as typed


def _split_ref(url: str) -> tuple[str, str | None]:
    """`https://host/o/r.git@v1` -> (`https://host/o/r.git`, `v1`); an `@` before the path is a user name."""
    if "://" in url:
        slash = url.find("/", url.index("://") + 3)
        start = slash if slash >= 0 else len(url)
    else:
        start = url.index(":") + 1
    head, tail = url[:start], url[start:]
    if "@" not in tail:
        return url, None
    tail, _, ref = tail.rpartition("@")
    if not ref or not tail or any(c.isspace() for c in ref):
        raise SkillError(f"cannot read the ref in {url!r}; write it as URL@branch, URL@tag or URL@commit")
    return head + tail, ref


def _is_git_dir(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def _is_archive(path: Path) -> bool:
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zX"))


def parse_source(text: str) -> Source:
    text = text.strip()
    hint = "give a folder, a git URL (https://, git@host:path, file://) with an optional @ref, or a .zip/.tar.gz"
    if not text:
        raise SkillError(f"empty source; {hint}")
    if _URL_RE.match(text) or _SCP_RE.match(text):
        low = text.lower().split("?", 1)[0]
        if low.startswith(("http://", "https://")) and low.endswith(ARCHIVE_SUFFIXES):
            raise SkillError(f"{text} is an archive on the web: download it first, look at it, then install the "
                             f"file (`loopwright skills install ./{low.rsplit('/', 1)[-1]}`)")
        url, ref = _split_ref(text)
        return Source(text, "git", url, ref)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(text, "dir", str(path.resolve()))
    if path.is_file():
        if _is_archive(path):
            return Source(text, "archive", str(path.resolve()))
        raise SkillError(f"{text} is neither a folder nor a .zip/.tar.gz archive; {hint}")
    base, at, ref = text.rpartition("@")
    if at and base and ref and Path(base).expanduser().is_dir() and _is_git_dir(Path(base).expanduser()):
        return Source(text, "git", Path(base).expanduser().resolve().as_uri(), ref)
    raise SkillError(f"no such folder or file: {text}; {hint}")


def sanitize(name: str) -> str:
    """A pack name: lowercase letters, digits and single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].strip("-") or "pack"


def default_pack(source: Source) -> str:
    if source.kind == "git":
        last = re.split(r"[/:]", source.location.rstrip("/"))[-1]
        return sanitize(last[:-4] if last.endswith(".git") else last)
    name = Path(source.location).name
    if source.kind == "archive":
        for suffix in ARCHIVE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    return sanitize(name)


# -- git ---------------------------------------------------------------------------------------------


def _git_env() -> dict[str, str]:
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1", "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
           "GIT_CONFIG_COUNT": str(len(_GIT_CONFIG))}
    for i, (key, value) in enumerate(_GIT_CONFIG.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


def _git_message(e: Exception) -> str:
    text = str(getattr(e, "stderr", "") or e).strip()
    text = re.sub(r"^stderr: '|'$", "", text)  # GitPython's wrapping
    found = [m.strip() for m in re.findall(r"(?:fatal|error): (.+)", text)]
    if found:
        return found[0].rstrip(".")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _remote_refs(url: str) -> dict[str, str]:
    import git

    g = git.cmd.Git()
    g.update_environment(**_git_env())
    try:
        out = g.ls_remote(url)
    except git.GitCommandNotFound:
        raise SkillError("git is not installed (or not on PATH); install git to install skills from git") from None
    except git.GitCommandError as e:
        raise SkillError(f"cannot read the git repository {url}: {_git_message(e)}; check the URL and your "
                         f"access to it") from None
    refs = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name:
            refs[name.strip()] = sha.strip()
    return refs


def _no_such_ref(url: str, ref: str, refs: dict[str, str]) -> SkillError:
    branches = sorted(n[len("refs/heads/"):] for n in refs if n.startswith("refs/heads/"))
    tags = sorted(n[len("refs/tags/"):] for n in refs if n.startswith("refs/tags/") and not n.endswith("^{}"))
    known = "; ".join(part for part in (f"branches: {', '.join(branches[:8])}" if branches else "",
                                        f"tags: {', '.join(tags[:8])}" if tags else "") if part)
    return SkillError(f"no branch, tag or commit '{ref}' in {url}" + (f"; {known}" if known else ""))


def clone(url: str, ref: str | None, dest: Path) -> str:
    """Check out `ref` of `url` into `dest` without running anything from it; the commit checked out."""
    import git

    refs = _remote_refs(url)
    if ref is None:
        sha, branch = refs.get("HEAD"), None
        if sha is None:
            raise SkillError(f"{url} has no commits (or no default branch); give a branch with URL@branch")
    else:
        name = next((n for n in (f"refs/heads/{ref}", f"refs/tags/{ref}") if n in refs), None)
        sha, branch = (refs.get(name + "^{}", refs[name]), ref) if name else (None, None)
        if name is None and not _HEX.fullmatch(ref):
            raise _no_such_ref(url, ref, refs)
    env = _git_env()
    repo = None
    try:
        if sha is not None:  # a branch, a tag or the default branch: only its last commit is needed
            repo = git.Repo.clone_from(url, dest, env=env, depth=1, **({"branch": branch} if branch else {}))
        else:  # a commit: fetch the history, then check it out
            repo = git.Repo.clone_from(url, dest, env=env, no_checkout=True)
            repo.git.update_environment(**env)
            try:
                sha = repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
            except git.GitCommandError:
                raise _no_such_ref(url, ref or "", refs) from None
            repo.git.checkout("--detach", "--quiet", sha)
        return repo.head.commit.hexsha
    except git.GitCommandError as e:
        raise SkillError(f"cannot clone {url}: {_git_message(e)}; check the URL, the ref and your access") from None
    finally:
        if repo is not None:
            repo.close()


# -- archives ----------------------------------------------------------------------------------------


def _extract(archive: Path, dest: Path) -> None:
    """Extract into `dest`, never outside it: tar through the "data" filter, zip members checked one by one."""
    dest.mkdir(parents=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest)
        return
    try:
        with tarfile.open(archive) as tf:
            def keep(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
                try:
                    return tarfile.data_filter(member, path)
                except tarfile.SpecialFileError:
                    return None  # device files and FIFOs are not part of a skill
            tf.extractall(dest, filter=keep)
    except tarfile.FilterError as e:
        raise SkillError(f"refused {archive.name}: {e}; fix the archive") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SkillError(f"cannot extract {archive.name}: {e}; check the archive") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    total = 0
    real_dest = os.path.realpath(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename
                parts = [p for p in name.split("/") if p not in ("", ".")]
                if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                    raise SkillError(f"refused {archive.name}: member {name!r} would land outside the pack")
                if not parts:
                    continue
                target = dest.joinpath(*parts)
                if not os.path.realpath(target.parent).startswith(real_dest):
                    raise SkillError(f"refused {archive.name}: member {name!r} goes through a link out of the pack")
                mode = info.external_attr >> 16
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.exists():
                    target.unlink()
                if stat.S_ISLNK(mode):
                    link = zf.read(info).decode("utf-8", "replace")
                    inside = posixpath.normpath(posixpath.join(posixpath.dirname("/".join(parts)), link))
                    if link.startswith("/") or inside == ".." or inside.startswith("../"):
                        raise SkillError(f"refused {archive.name}: link {name!r} points outside the pack")
                    os.symlink(link, target)
                    continue
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > MAX_TOTAL_UNCOMPRESSED:
                            raise SkillError(f"refused {archive.name}: it expands past "
                                             f"{MAX_TOTAL_UNCOMPRESSED >> 20} MB")
                        out.write(chunk)
                os.chmod(target, 0o755 if mode & 0o111 else 0o644)
    except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, ValueError) as e:
        raise SkillError(f"cannot extract {archive.name}: {e}; check the archive") from None


# -- staging -----------------------------------------------------------------------------------------


class Staging:
    """`<scope root>/.staging-<random>`: hidden from discovery, on the same filesystem as the skills, always removed."""

    def __init__(self, scope: Scope):
        self.scope = scope
        self.count = 0

    def __enter__(self) -> Staging:
        self.created_root = not self.scope.root.exists()
        self.scope.root.mkdir(parents=True, exist_ok=True)
        self.path = self.scope.root / f".staging-{secrets.token_hex(6)}"
        self.path.mkdir()
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.created_root:
            with contextlib.suppress(OSError):
                self.scope.root.rmdir()  # only when empty: a failed first install leaves nothing behind

    def new(self, prefix: str) -> Path:
        self.count += 1
        return self.path / f"{prefix}-{self.count}"


@dataclass
class Tree:
    source: Source
    root: Path  # the files: the folder itself, or a clone or extraction inside the staging folder
    commit: str | None = None
    findings: list[Finding] = field(default_factory=list)  # the archive's own (structural) findings


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


@dataclass
class Prepared:
    req: Request
    staged: list[Staged]
    skipped: list[dict]
    archive_findings: list[Finding]


def materialize(source: Source, st: Staging, out: Out) -> Tree:
    if source.kind == "dir":
        return Tree(source, Path(source.location))
    if source.kind == "git":
        dest = st.new("git")
        commit = clone(source.location, source.ref, dest)
        return Tree(source, dest.resolve(), commit)
    copy = st.new("archive")
    copy.mkdir()
    archive = copy / Path(source.location).name
    shutil.copyfile(source.location, archive)  # scan and extract the same bytes
    try:
        report = scan_archive(archive)
    except (ValueError, OSError) as e:
        raise SkillError(f"cannot read {source.text}: {e}; give a .zip or .tar.gz archive") from None
    structural = [f for f in report.findings if f.rule in REFUSED_RULES or (f.rule == "unscanned" and
                                                                             f.severity == "high")]
    _refuse(structural, out)
    dest = st.new("files")
    _extract(archive, dest)
    return Tree(source, dest.resolve(), None, [f for f in structural if f.rule not in REFUSED_RULES])


def _refuse(findings: list[Finding], out: Out) -> None:
    refused = [f for f in findings if f.rule in REFUSED_RULES and f.severity == "high"]
    if refused:
        out.findings(refused, refused=True)
        escapes = sum(f.rule != "archive-bomb" for f in refused)
        what = [f"{escapes} path(s) or link(s) that escape the pack"] if escapes else []
        what += ["an archive bomb"] if escapes < len(refused) else []
        raise SkillError(f"refused: {' and '.join(what)} (listed above); this cannot be overridden, not even with "
                         f"--allow-risky")


# -- what to install from a tree -----------------------------------------------------------------------


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
            paths = [base / "skills"] if (base / "skills").is_dir() else [base] if (base / SKILL_FILE).is_file() else []
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
    if not isinstance(url, str) or not (_URL_RE.match(url) or _SCP_RE.match(url)):
        raise SkillError(f"{where}: plugin '{name}': 'url' must be a git URL; fix it")
    ref = source.get("sha") or source.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise SkillError(f"{where}: plugin '{name}': 'ref' and 'sha' must be strings; fix it")
    sub = source.get("path") if kind == "git-subdir" else None
    if sub is not None and not isinstance(sub, str):
        raise SkillError(f"{where}: plugin '{name}': 'path' must be a string; fix it")
    return Source(url + (f"@{ref}" if ref else ""), "git", url, ref), sub


def _select(cands: list[Candidate], req: Request) -> list[Candidate]:
    if req.skills:
        known = sorted({c.name for c in cands})
        unknown = [n for n in req.skills if n not in known]
        if unknown:
            raise SkillError(f"no skill named {', '.join(unknown)} in {req.source.text}; the skills there: "
                             f"{', '.join(known) or '(none)'}")
        cands = [c for c in cands if c.name in req.skills]
    return [c for c in cands if c.ref not in req.exclude and c.name not in req.exclude]


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
    cands = _select(plan(tree, req, st, out), req)
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
        skill, _ = load_skill(dest)
        if errors or skill is None:
            skipped.append({"ref": c.ref, "path": c.subpath, "why": "invalid",
                            "reasons": errors or ["cannot be loaded"]})
            shutil.rmtree(dest)
            continue
        report = scan_tree(dest)
        findings = [Finding(f"{c.pack}/{c.name}/{f.path}", f.line, f.severity, f.rule, f.message)
                    for f in report.findings]
        digest, files = hash_tree(dest)
        staged.append(Staged(c, dest, digest, files, skill, findings))
    for s in skipped:
        out.say(f"skipped {s['ref']} ({s['path']}): {s['why']}: {'; '.join(s['reasons'])}")
    if not staged:
        raise SkillError(f"no valid skill to install from {req.source.text}"
                         + (f" ({len(skipped)} invalid, listed above); fix them" if skipped else
                            "; check --skill, --plugin and the source"))
    return Prepared(req, staged, skipped, tree.findings)


def gate(preps: list[Prepared], out: Out, accepted: set[str] = frozenset()) -> list[Finding]:
    """Refuse escaping paths always; block high findings unless --allow-risky (or accepted before, same hash)."""
    findings = [f for p in preps for f in p.archive_findings]
    findings += [f for p in preps for s in p.staged for f in s.findings]
    if not findings:
        return []
    counts = {sev: sum(f.severity == sev for f in findings) for sev in ("high", "medium", "low")}
    out.say(f"scan: {counts['high']} high, {counts['medium']} medium, {counts['low']} low")
    _refuse(findings, out)
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
    req = prep.req
    locked = {ref: e for ref, e in lock.items() if e.get("manifest") == req.key
              and (not req.skills or e.get("name") in req.skills)}
    if not locked:
        return [f"nothing in the lock comes from {req.source.text} (install it without --frozen first)"]
    problems = []
    for s in prep.staged:
        e = locked.get(s.ref)
        if e is None:
            problems.append(f"{s.ref} is not in the lock")
        elif e.get("commit") != s.cand.tree.commit:
            problems.append(f"{s.ref}: {s.cand.tree.source.ref or 'the default branch'} is now at "
                            f"{_short(s.cand.tree.commit)}, the lock has {_short(e.get('commit'))}")
        elif e.get("sha256") != s.sha256:
            added, removed, changed = diff_files(e.get("files") or {}, s.files)
            what = ", ".join([f"+{p}" for p in added] + [f"-{p}" for p in removed] + [f"~{p}" for p in changed])
            problems.append(f"{s.ref}: content differs from the lock ({what or 'hash'})")
    problems += [f"{ref} is in the lock but not in the source" for ref in sorted(set(locked) -
                                                                              {s.ref for s in prep.staged})]
    return problems


def install(scope: Scope, reqs: list[Request], out: Out, frozen: bool = False) -> dict:
    """Install every request into `scope`: all are prepared and checked before anything is moved."""
    result: dict = {"scope": scope.name, "root": str(scope.root), "installed": [], "unchanged": [], "skipped": []}
    with exclusive(scope), Staging(scope) as st:
        lock, manifest = read_lock(scope), read_manifest(scope)
        preps = [prepare(r, st, out) for r in reqs]
        for p in preps:
            result["skipped"] += p.skipped
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


def _changes(scope: Scope, prep: Prepared, lock: dict, only: set[str] | None) -> tuple[list[dict], list[str]]:
    changes, gone = [], []
    for s in prep.staged:
        if only is not None and s.ref not in only:
            continue
        entry, dest = lock.get(s.ref), scope.skill_dir(s.cand.pack, s.cand.name)
        if entry is None:
            changes.append({"ref": s.ref, "kind": "new", "staged": s, "added": sorted(s.files), "removed": [],
                            "changed": [], "scripts": _scripts(sorted(s.files), s.folder),
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
        changes.append({"ref": s.ref, "kind": "changed" if moved else "restore", "staged": s, "added": added,
                        "removed": removed, "changed": changed,
                        "scripts": _scripts(added + removed + changed, s.folder, dest),
                        "version": [before[0], version], "description": [before[1], s.skill.description],
                        "commit": [entry.get("commit"), s.cand.tree.commit],
                        "same_version": moved and before[0] == version})
    staged = {s.ref for s in prep.staged}
    gone = [ref for ref, e in sorted(lock.items()) if e.get("manifest") == prep.req.key and ref not in staged
            and (only is None or ref in only)]
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
    if c["scripts"]:
        out.say(f"  scripts changed: {', '.join(c['scripts'])} (read them: agents run them)")
    if c.get("same_version"):
        out.say(f"  WARNING: {c['ref']}: content changed without a version change (metadata.version "
                f"{v1 or 'none'}): what you accepted before is not what you get now")


def _targets(scope: Scope, name: str | None) -> tuple[list[str], set[str] | None]:
    """The manifest keys to update in `scope`, and the skills to limit the update to (None: all of them)."""
    manifest, lock = read_manifest(scope), read_lock(scope)
    if name is None:
        return sorted(manifest), None
    keys = [k for k, e in manifest.items() if name in (k, e.get("typed"), e.get("source"))]
    if keys:
        return sorted(keys), None
    only = {ref for ref, e in lock.items() if name in (ref, e.get("name"), e.get("pack"))}
    return sorted({lock[r].get("manifest") for r in only} & set(manifest)), only


def update(scopes: list[Scope], name: str | None, allow_risky: bool, out: Out,
           confirm: Callable[[int], bool]) -> dict:
    """Re-resolve the sources installed in `scopes` (all, or those of `name`: a skill, a pack or a source), say per
    skill what changed, and apply the changes once `confirm(number of changes)` agrees (the replaced copies kept
    for rollback). `{"changes": [...], "applied": bool}`; no changes: nothing asked, nothing applied."""
    targets = [(scope, *_targets(scope, name)) for scope in scopes]
    targets = [t for t in targets if t[1]]
    if not targets:
        raise SkillError(f"no installed skill or source named '{name}'; see `loopwright skills list`" if name else
                         "nothing was installed with `loopwright skills install`; nothing to update")
    result: dict = {"changes": [], "applied": False}
    with contextlib.ExitStack() as stack:
        todo: list[tuple[Scope, dict, Prepared, list[dict]]] = []
        for scope, keys, only in targets:
            stack.enter_context(exclusive(scope))
            st = stack.enter_context(Staging(scope))
            manifest, lock = read_manifest(scope), read_lock(scope)
            for key in keys:
                prep = prepare(request_from_manifest(scope, manifest[key], allow_risky), st, out)
                changes, gone = _changes(scope, prep, lock, only)
                for ref in gone:
                    out.say(f"{ref}: no longer in its source (kept; `loopwright skills remove {ref}` removes it)")
                todo.append((scope, lock, prep, changes))
        all_changes = [c for *_, cs in todo for c in cs]
        result["changes"] = [{k: v for k, v in c.items() if k != "staged"} for c in all_changes]
        if not all_changes:
            out.say("up to date")
            return result
        for c in all_changes:
            _show_change(c, out)
        gate([p for _, _, p, cs in todo if cs], out)
        if not confirm(len(all_changes)):
            return result
        for scope, lock, prep, changes in todo:
            for c in changes:
                s = c["staged"]
                previous = _put(scope, s, lock.get(s.ref))
                lock[s.ref] = _lock_entry(s, prep.req, previous, any(f.severity == "high" for f in s.findings))
                out.say(f"updated {s.ref}" + (" (the previous copy is kept: `loopwright skills rollback "
                                              f"{s.ref}`)" if c["kind"] != "new" else ""))
            if changes:
                write_lock(scope, lock)
        result["applied"] = True
    return result

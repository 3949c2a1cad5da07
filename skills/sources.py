"""Where skill packs come from, and getting their files without running anything from them.

A source is a local folder, a git URL (https://, ssh://, git://, file://, git@host:path) with an optional `@ref`
(branch, tag or commit, resolved to the 40-character commit; the default branch without one), or a .zip /
.tar.gz / .tgz archive on disk. `materialize` puts its files in the scope's staging folder: a folder is read in
place; git runs with hooks, LFS and other filters, and the ext transport disabled, and nothing comes from
submodules; an archive is scanned before it is extracted, and extracted with its members checked. Paths and links
that escape the pack, and archive bombs, are refused always (`refuse`).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.skills.catalog import SkillError
from loopwright.skills.lock import Out, Scope
from loopwright.skills.scan.archives import scan_archive
from loopwright.skills.scan.limits import MAX_TOTAL_UNCOMPRESSED
from loopwright.skills.scan.report import Finding

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
REFUSED_RULES = frozenset({"archive-path-escape", "symlink-escape", "archive-bomb"})  # not even with --allow-risky
_URL_RE = re.compile(r"^(?:https?|ssh|git|file)://", re.I)
_SCP_RE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")
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


def is_git_url(text: str) -> bool:
    """https://, ssh://, git://, file:// or scp-like `user@host:path`."""
    return bool(_URL_RE.match(text) or _SCP_RE.match(text))


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
    if is_git_url(text):
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


def materialize(source: Source, st: Staging, out: Out) -> Tree:
    """The files of `source`: the folder itself, or a clone or a checked extraction inside the staging folder."""
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
    refuse(structural, out)
    dest = st.new("files")
    _extract(archive, dest)
    return Tree(source, dest.resolve(), None, [f for f in structural if f.rule not in REFUSED_RULES])


def refuse(findings: list[Finding], out: Out) -> None:
    """Stop on the findings no flag overrides (paths and links that escape the pack, bombs), listing them."""
    refused = [f for f in findings if f.rule in REFUSED_RULES and f.severity == "high"]
    if refused:
        out.findings(refused, refused=True)
        escapes = sum(f.rule != "archive-bomb" for f in refused)
        what = [f"{escapes} path(s) or link(s) that escape the pack"] if escapes else []
        what += ["an archive bomb"] if escapes < len(refused) else []
        raise SkillError(f"refused: {' and '.join(what)} (listed above); this cannot be overridden, not even with "
                         f"--allow-risky")


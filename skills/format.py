"""The Agent Skills format (SKILL.md): a lenient loader for the catalog and a strict validator for authors.

A skill is a folder holding `SKILL.md`: YAML front matter between `---` lines (`name`, `description`,
optional `license`, `compatibility`, `metadata`, `allowed-tools`) and a markdown body, plus any other
files (`scripts/`, `references/`, `assets/`, ...). See https://agentskills.io/specification.

`load_skill` follows the client guide's lenient rules: cosmetic problems (a name that does not match
its folder, a long name) load with a warning; a skill without a usable description, without front
matter or with YAML that cannot be parsed is skipped with an error. Values holding an unquoted `: `
(`description: Use when: the user asks`), which some clients accept, are retried quoted.

`validate_skill` applies every rule of the specification strictly (errors) and adds quality warnings
(body length, angle brackets, deeply nested file references).

Loading is cheap: SKILL.md is read once (the first 4 KB when the front matter fits), only the front matter
goes through YAML (the C loader when PyYAML has it), and the body stays on disk (`Skill.body()` reads it on
demand).
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml

SKILL_FILE = "SKILL.md"
SKILL_FILES = (SKILL_FILE, "skill.md")  # skills-ref and Claude Code accept the lower-case name when alone
MAX_SKILL_BYTES = 1_000_000
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 1024
MAX_COMPATIBILITY_CHARS = 500
MAX_BODY_LINES = 500
MAX_BODY_TOKENS = 5000
ALLOWED_KEYS = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")
SKIP_DIRS = frozenset({".git", "node_modules", "__pycache__"})

_LOADER: Any = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
_HEAD_BYTES = 4096  # front matter is nearly always in the first read
_OPEN_RE = re.compile(rb"\A(?:\xef\xbb\xbf)?---[ \t]*\r?\n")
_CLOSE_RE = re.compile(rb"^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE)
_SCALARS = (str, int, float, bool, date)
# PyYAML raises YAMLError for syntax, and ValueError/TypeError/OverflowError/RecursionError for odd values
# (`2024-13-45` as a date, unhashable keys, very deep nesting).
_YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)


@dataclass(frozen=True)
class Diagnostic:
    level: Literal["error", "warning"]
    path: str  # the SKILL.md (or folder) it is about
    message: str  # one line, says what is wrong and what to do

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"


@dataclass
class Skill:
    name: str
    description: str
    path: Path  # the skill's folder
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    allowed_tools: list[str] | None = None  # `allowed-tools` split into tool patterns; None when absent
    body_offset: int = 0  # where the body starts in SKILL.md (bytes)
    mtime_ns: int = 0  # of SKILL.md when parsed (for caches and hot reload)
    size: int = 0

    def body(self) -> str:
        """The markdown after the front matter, read from disk now (blank lines around it trimmed)."""
        skill_md = skill_file(self.path)
        with open(skill_md, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > MAX_SKILL_BYTES:
                raise ValueError(f"{skill_md} is too large ({st.st_size:,} bytes, the limit is {MAX_SKILL_BYTES:,})")
            data = f.read()
        offset = self.body_offset
        if (st.st_mtime_ns, st.st_size) != (self.mtime_ns, self.size) or offset > len(data):
            bounds = _split(data)  # edited since it was parsed: find the body again
            offset = bounds[2] if bounds else 0
        return data[offset:].decode("utf-8", errors="replace").lstrip("\r\n").rstrip()

    def files(self, limit: int = 500) -> list[str]:
        """Relative paths (with `/`) of the skill's files except SKILL.md, sorted; at most `limit`.

        .git, node_modules and __pycache__ are skipped; symlinks are listed only when they point to a
        file inside the skill's folder, and symlinked folders are not entered.
        """
        root = self.path
        try:
            real_root = root.resolve(strict=True)
        except OSError:
            return []
        out: list[str] = []

        def walk(folder: Path, prefix: str) -> bool:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                return True
            for e in entries:
                rel = prefix + e.name
                try:
                    if e.is_symlink():
                        target = Path(e.path).resolve()
                        if target.is_file() and target.is_relative_to(real_root):
                            out.append(rel)
                    elif e.is_dir():
                        if e.name not in SKIP_DIRS and not walk(Path(e.path), rel + "/"):
                            return False
                    elif e.is_file() and rel not in SKILL_FILES:
                        out.append(rel)
                except OSError:
                    continue
                if len(out) >= limit:
                    return False
            return True

        if limit > 0:
            walk(root, "")
        return sorted(out)


def is_valid(diagnostics: list[Diagnostic]) -> bool:
    """True when none of the diagnostics is an error (warnings are fine)."""
    return not any(d.level == "error" for d in diagnostics)


# -- reading and splitting -------------------------------------------------------------------------


def _split(data: bytes) -> tuple[int, int, int] | None:
    """(front matter start, front matter end, body start) in bytes; None when there is no closed front matter."""
    m = _OPEN_RE.match(data)
    if not m:
        return None
    close = _CLOSE_RE.search(data, m.end())
    if not close:
        return None
    return m.end(), close.start(), close.end()


class _Unreadable(Exception):
    def __init__(self, diag: Diagnostic, st: os.stat_result | None = None):
        self.diag, self.st = diag, st  # st: of the file opened, when it was opened


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))  # a FIFO named SKILL.md must not hang the scan


def skill_file(folder: str | Path) -> str:
    """The path of a skill's SKILL.md, or of its `skill.md` when only that one is there."""
    upper = os.path.join(folder, SKILL_FILE)  # str paths: this runs for every skill in the catalog
    if not os.path.lexists(upper):
        lower = os.path.join(folder, "skill.md")
        if os.path.lexists(lower):
            return lower
    return upper


def _read(folder: Path, whole: bool) -> tuple[bytes, os.stat_result, tuple[int, int, int], str]:
    """Read SKILL.md once: the whole file, or (for loading) just enough to hold the front matter."""
    where = skill_file(folder)
    try:
        with open(where, "rb", opener=_open_nonblocking) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _Unreadable(Diagnostic("error", where, f"{SKILL_FILE} is not a regular file"), st)
            if st.st_size > MAX_SKILL_BYTES:
                raise _Unreadable(Diagnostic(
                    "error", where, f"too large ({st.st_size:,} bytes; the limit is {MAX_SKILL_BYTES:,}): skipped; "
                                    f"move detailed material into references/ files"), st)
            data = f.read(MAX_SKILL_BYTES + 1 if whole else _HEAD_BYTES)
            bounds = _split(data)
            if bounds is None and not whole and len(data) == _HEAD_BYTES:
                data += f.read(MAX_SKILL_BYTES + 1 - len(data))
                bounds = _split(data)
    except FileNotFoundError:
        raise _Unreadable(Diagnostic("error", str(folder), f"no {SKILL_FILE} here; a skill is a folder holding "
                                                          f"{SKILL_FILE} with YAML front matter")) from None
    except OSError as e:
        raise _Unreadable(Diagnostic("error", where, f"cannot read: {e.strerror or e}")) from None
    if len(data) > MAX_SKILL_BYTES:  # grew while we read it
        raise _Unreadable(Diagnostic("error", where, f"too large (over {MAX_SKILL_BYTES:,} bytes): skipped"), st)
    if bounds is None:
        if _OPEN_RE.match(data):
            msg = "the front matter is not closed: add a line holding only '---' after it"
        else:
            msg = ("no YAML front matter: the file must start with a '---' line, then name: and description:, "
                   "then a closing '---' line")
        raise _Unreadable(Diagnostic("error", where, msg), st)
    return data, st, bounds, where


# -- YAML ------------------------------------------------------------------------------------------


_KEY_LINE = re.compile(r"^([ \t]*)((?:-[ \t]+)?[A-Za-z0-9_][\w.-]*)[ \t]*:[ \t]+(\S.*?)[ \t]*$")


def _needs_quotes(value: str) -> bool:
    if value[0] in "\"'|>[{&*!#":
        return False
    plain = value.split(" #", 1)[0].rstrip()
    return ": " in plain or plain.endswith(":") or plain[0] in "@`%" or "\t" in plain


def _block_end(lines: list[str], i: int, indent: int) -> int:
    """Index after the lines that belong to the value on key line `i` (more indented, or blank)."""
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
        j += 1
    while j > i + 1 and not lines[j - 1].strip():
        j -= 1  # trailing blank lines are not part of it
    return j


def _quote_colon_values(text: str) -> tuple[str, list[int]] | None:
    """Wrap plain values that YAML rejects (an unquoted ': ', a leading '@' or '`') in single quotes.

    Continuation lines of a multi-line plain value go inside the same quotes (YAML folds them the same
    way); block scalars (`|`, `>`) are left alone. Returns the new text and the 0-based lines changed,
    or None when nothing needed quoting.
    """
    lines = text.split("\n")
    out: list[str] = []
    changed: list[int] = []
    i = 0
    while i < len(lines):
        m = _KEY_LINE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, key, value = m.groups()
        j = _block_end(lines, i, len(indent))
        plain = value[0] not in "\"'|>[{&*!#"
        cont = [ln.split(" #", 1)[0].rstrip() for ln in lines[i + 1:j] if not ln.strip().startswith("#")]
        if not (_needs_quotes(value) or (plain and any(": " in c or c.endswith(":") for c in cont))):
            out += lines[i:j] if value[0] in "|>" else [lines[i]]
            i = j if value[0] in "|>" else i + 1
            continue
        parts = [value.split(" #", 1)[0].rstrip()] + [c.strip() for c in cont]
        quoted = [p.replace("'", "''") for p in parts]
        out.append(f"{indent}{key}: '" + ("\n" + indent + "  ").join(quoted) + "'")
        changed.append(i)
        i = j
    return ("\n".join(out), changed) if changed else None


def _yaml_error_line(e: Exception) -> int | None:
    mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
    return None if mark is None else mark.line


def _parse_yaml(text: str) -> tuple[Any, list[int], str | None, int | None]:
    """(data, lines quoted by the retry, error, error line); lines are 0-based in `text`."""
    try:
        return yaml.load(text, Loader=_LOADER), [], None, None
    except _YAML_ERRORS as e:
        first_error, first_line = e, _yaml_error_line(e)
    retry = _quote_colon_values(text)
    if retry is not None:
        try:
            return yaml.load(retry[0], Loader=_LOADER), retry[1], None, None
        except _YAML_ERRORS:
            pass  # report the first error: it is about the file as written
    problem = getattr(first_error, "problem", None) or str(first_error)
    context = getattr(first_error, "context", None)
    msg = f"{context}: {problem}" if context else problem
    return None, [], " ".join(str(msg).split()), first_line


def _front_matter(data: bytes, bounds: tuple[int, int, int], where: str) -> tuple[dict | None, list[Diagnostic], bool]:
    """Parse the front matter: (mapping or None, diagnostics, whether the colon retry was needed)."""
    start, end, _ = bounds
    raw = data[start:end]
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        return None, [Diagnostic("error", where, f"the front matter is not UTF-8 (byte {start + e.start}): "
                                                 f"save the file as UTF-8")], False
    value, quoted, error, line = _parse_yaml(text)
    if error is not None:
        at = f" at line {line + 2}" if line is not None else ""  # +2: the opening '---' is line 1
        return None, [Diagnostic("error", where, f"invalid YAML in the front matter{at}: {error}; fix the YAML "
                                                 f"(quote values that contain ': ')")], False
    if value is None:
        value = {}
    if not isinstance(value, dict):
        return None, [Diagnostic("error", where, f"the front matter must be a YAML mapping of keys to values, "
                                                 f"not a {_type(value)}")], False
    diags = []
    if quoted:
        lines = ("line " if len(quoted) == 1 else "lines ") + ", ".join(str(n + 2) for n in quoted)
        diags.append(Diagnostic("warning", where, f"unquoted ': ' (or a leading '@' or '`') in a value on {lines} "
                                                  f"is not valid YAML; read as if quoted: put the value in quotes"))
    return value, diags, bool(quoted)


def _type(value: Any) -> str:
    if value is None:
        return "null (empty value)"
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def split_allowed_tools(value: str) -> list[str]:
    """`Bash(git add:*), Read Write` -> ['Bash(git add:*)', 'Read', 'Write']: whitespace or commas outside (...)."""
    tools, cur, depth = [], [], 0
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        if depth == 0 and (ch.isspace() or ch == ","):
            if cur:
                tools.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        tools.append("".join(cur))
    return tools


def name_problems(name: str) -> list[str]:
    """What is wrong with a (NFKC-normalised) name's characters, each as a clause; empty when it is fine.

    As skills-ref has it: lower-case letters of any script, digits and single hyphens inside (`技能`,
    `мой-навык`, `café`)."""
    out = []
    if name != name.lower():
        out.append("must be lowercase")
    if name.startswith("-") or name.endswith("-"):
        out.append("must not start or end with '-'")
    if "--" in name:
        out.append("must not contain '--'")
    if not all(c.isalnum() or c == "-" for c in name):
        out.append("may only use letters, digits and '-'")
    return out


# -- lenient loading -------------------------------------------------------------------------------


def load_skill(folder: Path) -> tuple[Skill | None, list[Diagnostic]]:
    """Load a skill for the catalog, leniently: (the skill or None when it must be skipped, diagnostics).

    Only SKILL.md's front matter is parsed; the body is left on disk.
    """
    skill, diags, _ = load_skill_stat(folder)
    return skill, diags


def load_skill_stat(folder: Path) -> tuple[Skill | None, list[Diagnostic], os.stat_result | None]:
    """`load_skill`, plus the stat of the SKILL.md it read (None when it could not be opened), for caches."""
    if not isinstance(folder, Path):
        folder = Path(folder)
    try:
        data, st, bounds, where = _read(folder, whole=False)
    except _Unreadable as e:
        return None, [e.diag], e.st
    fm, diags, _ = _front_matter(data, bounds, where)
    if fm is None:
        return None, diags, st

    def warn(msg: str) -> None:
        diags.append(Diagnostic("warning", where, msg))

    def skip(msg: str) -> tuple[None, list[Diagnostic], os.stat_result]:
        diags.append(Diagnostic("error", where, msg + ": skipped"))
        return None, diags, st

    desc = fm.get("description")
    if desc is None or (isinstance(desc, str) and not desc.strip()):
        return skip("no description: add `description:` saying what the skill does and when to use it")
    if not isinstance(desc, _SCALARS):
        return skip(f"description must be text, not a {_type(desc)}")
    if not isinstance(desc, str):
        warn(f"description is a {_type(desc)}, not text: quote it")
    description = _scalar_text(desc).strip()

    raw_name = fm.get("name")
    if raw_name is None or (isinstance(raw_name, str) and not raw_name.strip()):
        name = folder.name
        warn(f"no name: using the folder name '{name}'; add `name: {name}`")
    elif not isinstance(raw_name, _SCALARS):
        name = folder.name
        warn(f"name must be text, not a {_type(raw_name)}: using the folder name '{name}'")
    else:
        if not isinstance(raw_name, str):
            warn(f"name is a {_type(raw_name)}, not text: quote it")
        name = unicodedata.normalize("NFKC", _scalar_text(raw_name).strip())
        if len(name) > MAX_NAME_CHARS:
            warn(f"name is {len(name)} characters, over the {MAX_NAME_CHARS} allowed: shorten it")
        problems = name_problems(name)
        if problems:
            warn(f"name '{name}' " + ", ".join(problems) + " (loaded anyway)")
        if name != unicodedata.normalize("NFKC", folder.name):
            warn(f"name '{name}' does not match its folder '{folder.name}': rename one of them (loaded as '{name}')")

    def text_field(key: str) -> str | None:
        value = fm.get(key)
        if value is None:
            return None
        if isinstance(value, _SCALARS):
            return _scalar_text(value)
        warn(f"{key} must be text, not a {_type(value)}: ignored")
        return None

    license_ = text_field("license")
    compatibility = text_field("compatibility")

    metadata: dict[str, str] = {}
    raw_meta = fm.get("metadata")
    if isinstance(raw_meta, dict):
        dropped = []
        for k, v in raw_meta.items():
            if v is None:
                continue
            if isinstance(v, _SCALARS):
                metadata[_scalar_text(k)] = _scalar_text(v)
            else:
                dropped.append(_scalar_text(k))
        if dropped:
            warn(f"metadata values must be text; ignored: {', '.join(dropped)}")
    elif raw_meta is not None:
        warn(f"metadata must be a mapping of keys to text, not a {_type(raw_meta)}: ignored")

    allowed_tools: list[str] | None = None
    raw_tools = fm.get("allowed-tools")
    if isinstance(raw_tools, str):
        allowed_tools = split_allowed_tools(raw_tools)
    elif isinstance(raw_tools, list):
        allowed_tools = [_scalar_text(t).strip() for t in raw_tools if isinstance(t, _SCALARS) and str(t).strip()]
        if len(allowed_tools) != len([t for t in raw_tools if t is not None]):
            warn("allowed-tools has items that are not tool names: ignored them")
    elif raw_tools is not None:
        warn(f"allowed-tools must be a space-separated string or a list, not a {_type(raw_tools)}: ignored")

    skill = Skill(name=name, description=description, path=folder, license=license_, compatibility=compatibility,
                  metadata=metadata, allowed_tools=allowed_tools, body_offset=bounds[2], mtime_ns=st.st_mtime_ns,
                  size=st.st_size)
    return skill, diags, st


# -- strict validation -----------------------------------------------------------------------------


_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")
_BARE_PATH = re.compile(r"(?<![\w./:@$~{}-])(?:\$\{?\w+\}?/|\{\w+\}/)?((?:\./)?\w[\w.-]*(?:/[\w.-]+)+)")
_RESOURCE_DIRS = ("scripts", "references", "assets")


def _deep_references(body: str, folder: Path) -> list[str]:
    """Relative file references in the body with more than one folder level (`references/a/b.md`)."""
    found: dict[str, None] = {}
    candidates = [(m.group(1), True) for m in _MD_LINK.finditer(body)]
    candidates += [(m.group(1), False) for m in _BARE_PATH.finditer(body)]
    top_dirs: set[str] | None = None
    for target, is_link in candidates:
        if "://" in target or target.startswith(("#", "/", "~", "mailto:")):
            continue
        target = target.split("#", 1)[0].split("?", 1)[0].rstrip(".,;:")
        parts = [p for p in target.split("/") if p not in ("", ".")]
        if len(parts) < 3 or ".." in parts:
            continue
        if not is_link and parts[0] not in _RESOURCE_DIRS:
            if top_dirs is None:
                try:
                    top_dirs = {e.name for e in os.scandir(folder) if e.is_dir()}
                except OSError:
                    top_dirs = set()
            if parts[0] not in top_dirs:
                continue
        found["/".join(parts)] = None
    return list(found)


def validate_skill(folder: Path, *, strict: bool = False) -> list[Diagnostic]:
    """Check a skill folder against every rule of the specification, as skills-ref (its reference validator) does.

    Errors make the skill invalid (`is_valid`); warnings are advice (body length, angle brackets,
    deeply nested references). A description over the specification's limit is only a warning unless
    `strict`: Claude Code loads such skills (Anthropic's `claude-api` has one), so installing does too.
    Unquoted numbers, dates and booleans are text, as YAML without types (skills-ref's) reads them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        return [Diagnostic("error", str(folder), f"{what}; a skill is a folder holding {SKILL_FILE}")]
    try:
        data, _, bounds, where = _read(folder, whole=True)
    except _Unreadable as e:
        return [e.diag]
    fm, diags, retried = _front_matter(data, bounds, where)
    if fm is None:
        return diags
    if retried:  # strict: other clients will reject the file
        diags = [Diagnostic("error", d.path, d.message) for d in diags]

    def error(msg: str) -> None:
        diags.append(Diagnostic("error", where, msg))

    def warn(msg: str) -> None:
        diags.append(Diagnostic("warning", where, msg))

    extra = [k for k in fm if k not in ALLOWED_KEYS]
    if extra:
        error(f"unknown front matter key(s): {', '.join(map(_scalar_text, extra))}; allowed: {', '.join(ALLOWED_KEYS)} "
              f"(put client-specific fields under metadata)")

    fm = {k: _scalar_text(v) if isinstance(v, _SCALARS) else v for k, v in fm.items()}
    name = fm.get("name")
    if "name" not in fm:
        error(f"missing required field: name (use the folder name, e.g. `name: {folder.name}`)")
    elif not isinstance(name, str) or not name.strip():
        error(f"name must be a non-empty string, not a {_type(name) if not isinstance(name, str) else 'blank one'}")
    else:
        norm = unicodedata.normalize("NFKC", name.strip())
        if len(norm) > MAX_NAME_CHARS:
            error(f"name is {len(norm)} characters; the limit is {MAX_NAME_CHARS}")
        problems = name_problems(norm)
        if problems:
            error(f"name '{norm}' " + ", ".join(problems))
        if norm != unicodedata.normalize("NFKC", folder.name):
            error(f"name '{norm}' must match its folder name '{folder.name}': rename the folder or the name")
        if "<" in norm or ">" in norm:
            warn("name contains angle brackets (< or >): remove them, they can be read as XML tags in prompts")

    desc = fm.get("description")
    if "description" not in fm:
        error("missing required field: description (say what the skill does and when to use it)")
    elif not isinstance(desc, str) or not desc.strip():
        kind = "blank one" if isinstance(desc, str) else _type(desc)
        error(f"description must be a non-empty string, not a {kind}")
    else:
        n = len(desc.strip())
        if n > MAX_DESCRIPTION_CHARS:
            (error if strict else warn)(
                f"description is {n} characters; the limit is {MAX_DESCRIPTION_CHARS}: shorten it"
                + ("" if strict else " (loaded anyway, as Claude Code does; `skills validate --strict` refuses it)"))
        if "<" in desc or ">" in desc:
            warn("description contains angle brackets (< or >): remove them, they can be read as XML tags in prompts")

    if "license" in fm and not isinstance(fm["license"], str):
        error(f"license must be a string (a license name or a bundled file), not a {_type(fm['license'])}")

    if "compatibility" in fm:
        comp = fm["compatibility"]
        if not isinstance(comp, str) or not comp.strip():
            error(f"compatibility must be a non-empty string, not a "
                  f"{_type(comp) if not isinstance(comp, str) else 'blank one'} (or remove it)")
        elif len(comp) > MAX_COMPATIBILITY_CHARS:
            error(f"compatibility is {len(comp)} characters; the limit is {MAX_COMPATIBILITY_CHARS}")

    if "metadata" in fm:
        meta = fm["metadata"]
        if not isinstance(meta, dict):
            error(f"metadata must be a mapping of string keys to string values, not a {_type(meta)}")
        else:
            bad = [f"{_scalar_text(k)} ({_type(v)})" for k, v in meta.items()
                   if not isinstance(k, _SCALARS) or not isinstance(v, _SCALARS)]
            if bad:
                error(f"metadata must map strings to strings; not strings: {', '.join(bad)}")

    if "allowed-tools" in fm:
        tools = fm["allowed-tools"]
        if isinstance(tools, list):
            if not all(isinstance(t, _SCALARS) for t in tools):
                error("allowed-tools list items must all be strings")
        elif not isinstance(tools, str):
            error(f"allowed-tools must be a space-separated string or a list of strings, not a {_type(tools)}")

    body = data[bounds[2]:].decode("utf-8", errors="replace")
    lines = len(body.strip("\r\n").splitlines())
    if lines > MAX_BODY_LINES:
        warn(f"the body is {lines} lines (over {MAX_BODY_LINES}): move detailed material into references/ files")
    tokens = len(body) // 4
    if tokens > MAX_BODY_TOKENS:
        warn(f"the body is about {tokens:,} tokens (over {MAX_BODY_TOKENS:,}): move detailed material into "
             f"references/ files")
    deep = _deep_references(body, folder)
    if deep:
        shown = ", ".join(deep[:3]) + (f" and {len(deep) - 3} more" if len(deep) > 3 else "")
        warn(f"file references more than one level deep from {SKILL_FILE}: {shown}; keep referenced files "
             f"directly in a folder such as references/")
    return diags

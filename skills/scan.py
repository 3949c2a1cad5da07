"""Security scan of a skill pack, run when a pack is installed or updated.

`scan_tree(root)` scans every file under a folder; `scan_archive(path)` scans a .zip, .tar, .tar.gz/.tgz (also
.tar.bz2 and .tar.xz) without extracting anything to disk. Both return a `ScanReport` of `Finding`s, each with the
file (inside an archive: ``archive.zip!inner/path``), the line when there is one, a severity and a rule id. High
findings are `ScanReport.blocking`: the installer refuses the pack unless the user passes ``--allow-risky``.

Rules (severity):

* ``pipe-to-shell`` (high): a download piped into a shell or interpreter (``curl … | sh``, ``wget -qO- … | sudo
  bash``, ``bash <(curl …)``, ``sh -c "$(curl …)"``, ``irm … | iex``, ``iex (iwr …)``), decoded base64 piped into a
  shell, and ``exec``/``eval`` of a download or of decoded data (``exec(urlopen(…).read())``, ``eval(atob(…))``).
  ``curl … | jq``, ``| python3 -m json.tool``, ``| shasum`` and "download to a file, then run it" are not findings.
* ``secret-exfiltration``: judged per file, because the read and the send are usually on different lines.
  - high: a credentials file (``~/.ssh/id_*``, ``~/.aws/credentials``, ``.netrc``, ``.git-credentials``, gh's
    ``hosts.yml``, docker/kube configs, ``.env`` read with cat/open/readFile/``@``, macOS keychain, secret-tool) or
    the whole environment (``env |``, ``os.environ.items()``, ``JSON.stringify(process.env)``, /proc/*/environ) in
    a file that also uses the network;
  - high: an environment secret (``$*_API_KEY``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``… read via ``$NAME``,
    ``os.environ``/``getenv``, ``process.env``, ``$env:``, ``ENV[]``) that flows into a request: on the line of a
    network call outside an auth header, after a body/form/query marker (``-d``, ``data=``, ``json=``, ``body:``,
    ``?x=``), or via a variable assigned from it (and from that one: followed forward through the file); also
    any environment secret in a file that opens a raw connection (nc, /dev/tcp, sockets, smtplib);
  - medium: an environment secret is used somewhere the scan cannot follow (a function argument, a print) in a
    file that also sends data (POST/upload);
  - nothing: reading an API key from the environment for the file's own API use — put in an auth header
    (``Authorization``, ``Bearer``, ``X-…-Token``, ``-H``, ``-u``, ``headers=``, ``api_key=``, ``?key=``) or an SDK
    client (``OpenAI(api_key=…)``, ``gh = Github(token)``), tested in a guard (``if not key:``), or used with
    GET-only network calls. Loading ``.env`` with ``source``/``load_dotenv`` is this case too: what is read from
    it is judged as environment secrets. The scan cannot tell an API's own host from an attacker's, so a key
    put in the auth header of a request to the wrong host is not caught.
  - low: a credentials file read in a file with no network use. In prose (Markdown, text), a credentials path
    counts only with a read verb or command next to it (``cat``, ``read``, ``upload``, ``@``…), so documentation
    that merely names ``~/.aws/credentials`` is not a finding.
* ``hide-from-user``: "do not tell/inform the user", "without telling the user", "hide … from the user", "don't
  mention this", "the user must not know", "silently/secretly <delete|send|upload|run|…>" (imperative only, and not
  after a negation: "never delete files without telling the user" is fine; "fails silently" is fine). High in
  prose; medium in code files, where such words are more often a developer's comment. The "silently" form is
  prose-only.
* ``invisible-unicode``: zero-width characters (U+200B–U+200D, U+2060–U+2064, U+180E, U+FEFF other than a leading
  BOM) and tag characters (U+E0000–U+E007F). Medium in prose; high in code files, in Markdown code fences, and for
  tag characters that spell hidden text (the "ASCII smuggling" of instructions an agent reads and a person cannot
  see). Zero-width joiners inside emoji or between letters of scripts that need them, and emoji tag sequences
  (subdivision flags), are not findings.
* ``bidi-unicode`` (high): U+202A–U+202E, U+2066–U+2069.
* ``encoded-blob`` (medium): base64/base64url or hex runs of >= 200 characters, base64 wrapped over 4+ lines of
  >= 60 characters (bare or as quoted string pieces), and ``\\xNN`` / ``0xNN,`` byte escapes of >= 50 bytes, in
  text files; base64 must look random (mixed case, ~15% digits), so long identifiers and rulers are not blobs.
  A blob whose start decodes to an image, font, PDF or source map is judged by that type and is not a finding;
  one that decodes to an executable is high. Certificates and public keys in PEM blocks are not findings.
* ``executable-binary``: ELF, Mach-O and PE/MZ files are high (judged by magic bytes, whatever the name);
  WebAssembly is medium. Images, fonts and PDFs are fine.
* ``symlink-escape`` (high): a symlink (on disk or an archive member; hard links in tars too) whose target
  resolves outside the pack. Links that stay inside are not findings on disk; inside archives they are
  ``archive-link`` (low), since extraction of links needs care.
* ``archive-path-escape`` (high): a member whose name is absolute (``/…``, ``C:…``) or has a ``..`` component.
* ``archive-bomb`` (high): an archive that declares or expands to more than 200 MB in total (nested archives
  share the allowance), a member or compressed stream that expands more than 100× past 10 MB, or more than
  10,000 members. The member (or the rest of the archive) is not read.
* ``special-file`` (medium): device nodes, FIFOs and sockets (on disk or as tar members); they are not read.
* ``unscanned``: content the scan could not look into: high for an encrypted zip member or an archive nested
  more than one level deep (a pack has no honest reason for either); medium for an unreadable file, a corrupt or
  truncated archive, an unsupported compression or archive format (7z, rar, zstd) or a nested zip over 64 MB.

Whole files are read, never truncated, with bounded memory: files are streamed in 1 MiB chunks, decoded
incrementally, and scanned in blocks of about 1 MiB of text that end at a line break; each block is scanned
together with the last 8 lines (at most 8 KiB) of the previous one, so patterns that span a block boundary are
still found (a line longer than a block is cut into overlapping segments). Findings are deduplicated per file,
rule and line, and at most 20 per file, rule and severity are listed (then one "N more" finding). Each rule's
regex is tried only where one of its keywords occurs (found with str.find), anchored there, so dense or hostile
text costs one short match attempt per keyword, not a regex alternation tried at every character.

A file is text when its first 8 KiB hold no NUL byte (decoded as UTF-8 with errors="replace"; a UTF-16 BOM is
honoured); otherwise it is binary and judged by its magic bytes. Archives are recognised by their magic bytes,
not their names, wherever they are (in the pack, or inside another archive one level deep); they are read in
memory or streamed, never extracted. The scan never follows symlinks, never opens anything but regular files,
and never raises on malformed input: what it cannot read is an ``unscanned`` finding.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import bz2
import codecs
import gzip
import io
import lzma
import os
import posixpath
import re
import stat
import tarfile
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Finding", "ScanReport", "Severity", "scan_archive", "scan_tree"]

Severity = Literal["low", "medium", "high"]
_RANK = {"low": 0, "medium": 1, "high": 2}

HEAD_BYTES = 8192                          # text/binary decision and magic bytes
CHUNK_BYTES = 1 << 20                      # read size
BLOCK_CHARS = 1 << 20                      # text scanned per block
CONTEXT_LINES, CONTEXT_CHARS = 8, 8192     # carried into the next block
MAX_TOTAL_UNCOMPRESSED = 200 * 1024 * 1024
MAX_RATIO = 100
RATIO_MIN_BYTES = 10 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_NESTED_ZIP_BYTES = 64 * 1024 * 1024
MAX_FINDINGS_PER_RULE = 20
BLOB_MIN_CHARS = 200


@dataclass(frozen=True)
class Finding:
    path: str        # relative to the scanned root (inside an archive: "archive.zip!inner/path")
    line: int | None
    severity: Severity
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity}: {where}: {self.message} [{self.rule}]"


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    files_scanned: int = 0
    bytes_scanned: int = 0

    @property
    def blocking(self) -> list[Finding]:
        """The high-severity findings: they block the install unless --allow-risky."""
        return [f for f in self.findings if f.severity == "high"]

    def summary(self) -> str:
        counts = Counter(f.severity for f in self.findings)
        n = self.files_scanned
        files = f"{n} file{'' if n == 1 else 's'}"
        return f"{counts['high']} high, {counts['medium']} medium, {counts['low']} low in {files}"


# ---------------------------------------------------------------------------------------------------------------
# small helpers

def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}" if n >= 10 * scale else f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


_ZW_CHARS = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e"
_BIDI_CHARS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _hidden(ch: str) -> bool:
    o = ord(ch)
    return (ch in _ZW_CHARS or ch in _BIDI_CHARS or 0xE0000 <= o <= 0xE007F or (o < 0x20 and ch not in "\t\n\r")
            or 0x7F <= o < 0xA0 or ch in "\u200e\u200f\u00ad\ufffd")


def _show(text: str, limit: int = 80) -> str:
    """One printable line: hidden characters written as <U+XXXX>, whitespace collapsed, shortened."""
    s = "".join(f"<U+{ord(c):04X}>" if _hidden(c) else c for c in text)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _excerpt(text: str, start: int, end: int, limit: int = 80) -> str:
    """The match in its line, shortened to about `limit` characters."""
    ls = text.rfind("\n", 0, start) + 1
    le = text.find("\n", end)
    le = len(text) if le < 0 else le
    lo = max(ls, start - 20)
    hi = min(le, max(end, start + limit))
    seg = text[lo:hi]
    return _show(("…" if lo > ls else "") + seg, limit)


def _last_start(regex: re.Pattern, text: str) -> int:
    pos = -1
    for m in regex.finditer(text):
        pos = m.start()
    return pos


class _Lines:
    """Line numbers of positions in a block (newline index built on first use)."""

    def __init__(self, text: str, base: int):
        self.text, self.base, self._nl = text, base, None

    def at(self, pos: int) -> int:
        if self._nl is None:
            self._nl = [m.start() for m in re.finditer("\n", self.text)]
        return self.base + bisect.bisect_left(self._nl, pos)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class _Finder:
    """Runs a rule's regex only where its keywords are (found with str.find in a lower-cased copy): anchored at
    each keyword (`matches`), or on the lines holding one (`finditer`). Far faster than letting an alternation
    with lookbehinds try every position of a megabyte block."""

    MAX_HITS = 5000       # past this many lines with a keyword, the regex runs on the whole block

    def __init__(self, text: str):
        low = text.lower()
        # same length as `text` (lower() can change it outside ASCII), behind one "\n" so that the first line
        # has a line start like the others: positions in `low` are one past those in `text`
        self.low = "\n" + (low if len(low) == len(text) else text.translate(_ASCII_LOWER))
        self._cache: dict[tuple, list[tuple[int, int]]] = {}

    def spans(self, keywords: tuple[str, ...], extra: int = 0) -> list[tuple[int, int]]:
        key = (keywords, extra)
        if key in self._cache:
            return self._cache[key]
        low, n, found = self.low, len(self.low), []
        for kw in keywords:
            i = low.find(kw)
            while i >= 0:
                if len(found) >= self.MAX_HITS:
                    self._cache[key] = [(0, n - 1)]
                    return self._cache[key]
                a = low.rfind("\n", 0, i) + 1
                b = low.find("\n", i + len(kw))
                b = n if b < 0 else b
                for _ in range(extra):
                    if a > 0:
                        a = low.rfind("\n", 0, a - 1) + 1
                    if b < n:
                        nb = low.find("\n", b + 1)
                        b = n if nb < 0 else nb
                found.append((max(a - 1, 0), b - 1))
                i = low.find(kw, b)
        found.sort()
        merged: list[tuple[int, int]] = []
        for a, b in found:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._cache[key] = merged
        return merged

    def finditer(self, regex: re.Pattern, text: str, keywords: tuple[str, ...], extra: int = 0):
        for a, b in self.spans(keywords, extra):
            yield from regex.finditer(text, a, b)

    def matches(self, regex: re.Pattern, text: str, keywords: tuple[str, ...]) -> list[re.Match]:
        """Matches of `regex` starting exactly where one of `keywords` starts (every alternative of such a
        regex begins with one of them), left to right, without overlaps. Costs one anchored attempt per
        keyword occurrence, however dense the keywords."""
        low, found = self.low, []
        for kw in keywords:
            i = low.find(kw)
            while i >= 0:
                m = regex.match(text, i - 1)
                if m:
                    found.append(m)
                i = low.find(kw, i + 1)
        found.sort(key=lambda m: (m.start(), -m.end()))
        out, end = [], -1
        for m in found:
            if m.start() >= end:
                out.append(m)
                end = m.end()
        return out


class _FileFindings:
    """One file's findings: deduplicated per (rule, line), the higher severity kept, capped per rule."""

    def __init__(self, path: str):
        self.path = path
        self.items: list[Finding] = []
        self._index: dict[tuple[str, int | None], int] = {}
        self._count: Counter = Counter()
        self._dropped: Counter = Counter()

    def add(self, line: int | None, severity: Severity, rule: str, message: str) -> None:
        key = (rule, line)
        i = self._index.get(key)
        if i is not None:
            if _RANK[severity] > _RANK[self.items[i].severity]:
                self.items[i] = Finding(self.path, line, severity, rule, message)
            return
        if self._count[(rule, severity)] >= MAX_FINDINGS_PER_RULE:
            self._dropped[(rule, severity)] += 1
            return
        self._count[(rule, severity)] += 1
        self._index[key] = len(self.items)
        self.items.append(Finding(self.path, line, severity, rule, message))

    def done(self) -> list[Finding]:
        out = sorted(self.items, key=lambda f: f.line or 0)
        for (rule, severity), n in self._dropped.items():
            out.append(Finding(self.path, None, severity, rule,
                               f"{n} more {severity} {rule} finding{'' if n == 1 else 's'} in this file not listed"))
        return out


def _add(report: ScanReport, path: str, severity: Severity, rule: str, message: str, line: int | None = None) -> None:
    report.findings.append(Finding(path, line, severity, rule, message))


# ---------------------------------------------------------------------------------------------------------------
# file types

_CODE_EXTS = frozenset(
    ".py .pyw .sh .bash .zsh .ksh .fish .csh .js .mjs .cjs .ts .mts .cts .jsx .tsx .rb .pl .pm .php .ps1 .psm1 .psd1"
    " .bat .cmd .go .rs .lua .java .kt .kts .swift .c .h .cc .cpp .cxx .hpp .cs .r .jl .scala .groovy .vbs .vba"
    " .applescript .awk .sed .tcl .ipynb .nu .elv .vim .el .ex .exs .dart .m .mm".split())
_CODE_NAMES = frozenset("makefile gnumakefile dockerfile containerfile justfile rakefile vagrantfile".split())
_MARKDOWN_EXTS = (".md", ".markdown", ".mdx", ".mdc")


def _is_code(name: str) -> bool:
    base = posixpath.basename(name.replace("\\", "/")).lower()
    return posixpath.splitext(base)[1] in _CODE_EXTS or base in _CODE_NAMES


def _executable_kind(head: bytes) -> tuple[Severity, str] | None:
    if head[:4] == b"\x7fELF":
        return "high", "ELF executable"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"):
        return "high", "Mach-O executable"
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8 and 0 < int.from_bytes(head[4:8], "big") < 30:
        return "high", "Mach-O universal executable"          # (a Java class file has a version >= 45 here)
    if head[:2] == b"MZ" and b"\0" in head[:HEAD_BYTES]:
        if len(head) >= 0x40:
            off = int.from_bytes(head[0x3C:0x40], "little")
            if off + 4 <= len(head) and head[off:off + 4] == b"PE\0\0":
                return "high", "Windows PE executable"
        return "high", "DOS/Windows (MZ) executable"
    if head[:4] == b"\0asm":
        return "medium", "WebAssembly module"
    return None


_TYPE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"), (b"\xff\xd8\xff", "JPEG image"), (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"), (b"%PDF-", "PDF"), (b"wOFF", "WOFF font"), (b"wOF2", "WOFF2 font"),
    (b"\x00\x01\x00\x00", "TrueType font"), (b"OTTO", "OpenType font"), (b"ttcf", "font collection"),
    (b"II*\x00", "TIFF image"), (b"MM\x00*", "TIFF image"), (b"\x00\x00\x01\x00", "icon"),
)


_WEAK_MAGIC = (b"\x00\x01\x00\x00", b"\x00\x00\x01\x00", b"II*\x00", b"MM\x00*")


def _media_type(data: bytes, strong: bool = False) -> str | None:
    """Images, fonts and PDFs: judged by type, never by their bytes. `strong`: only magic numbers too specific
    to be a prefix put in front of something else by chance (not TrueType's 00 01 00 00, say)."""
    for magic, what in _TYPE_MAGIC:
        if data.startswith(magic) and not (strong and magic in _WEAK_MAGIC):
            return what
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP image"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "image"
    return None


_UNSUPPORTED_ARCHIVES = ((b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!\x1a\x07", "rar"), (b"\x28\xb5\x2f\xfd", "zstd"))


def _archive_kind(head: bytes) -> str | None:
    """'zip', 'tar', 'gz', 'bz2', 'xz', 'unsupported:<name>' or None, from magic bytes."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gz"
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if _is_tar_header(head):
        return "tar"
    for magic, name in _UNSUPPORTED_ARCHIVES:
        if head.startswith(magic):
            return f"unsupported:{name}"
    return None


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")   # old v7 tar: a valid header checksum
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------------------
# text rules

# -- pipe-to-shell
_SUDO = r"(?:sudo[ \t]+(?:-[\w-]+[ \t]+)*)?"
_BINDIR = r"(?:(?:/usr)?(?:/local)?/bin/)?"
_SINK = (rf"\|[ \t]*{_SUDO}(?:env[ \t]+(?:-\S+[ \t]+)*(?:\w+=\S*[ \t]+)*)?{_BINDIR}"
         r"(?:(?:(?:ba|z|da|k|fi|tc|c|a|mk)?sh|source)\b(?![.\w-])"
         r"|(?:python[\d.]*|perl|ruby|node|php|pwsh|powershell)(?:[ \t]+-(?=[ \t\r]|$)[^\n|;&]*)?[ \t]*"
         r"(?=$|[\r;&|)`'\"]))")
_FETCH = r"\b(?:curl|wget|fetch|aria2c)\b[^|\n;&]*?(?:://|\$\{?[A-Za-z_]|\b[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b)"
_DECODE = r"\b(?:base64[ \t]+(?:-\w*d\w*|--decode)|xxd[ \t]+-r\w*|openssl[ \t]+(?:enc[ \t]+)?-?base64[ \t]+-d)\b"
_PIPE_RULES = (   # (regex, what it does, keywords: the words its matches start with, or (window) a line holds)
    (re.compile(rf"(?P<fetch>{_FETCH})[^\n]*?{_SINK}|{_DECODE}[^\n]*?{_SINK}", re.M), None,
     ("curl", "wget", "fetch", "aria2c", "base64", "xxd", "openssl"), True),
    (re.compile(r"\b(?:(?:ba|z|da|k)?sh|eval|exec|source|python[\d.]*|perl|ruby|node)[ \t]+(?:-\w+[ \t]+)*"
                r"[\"']?(?:\$\(|`)[ \t]*(?:curl|wget)\b"), "runs a downloaded script", ("curl", "wget"), False),
    (re.compile(r"(?:\b(?:(?:ba|z|da|k)?sh|source|python[\d.]*|perl|ruby|node)|(?:^|[;&|(]|[ \t])\.)[ \t]+"
                r"(?:-\w+[ \t]+)*<\([ \t]*(?:curl|wget)\b", re.M), "runs a downloaded script", ("<(",), False),
    (re.compile(r"\b(?:iex|invoke-expression)[ \t]*[(\$\"'&]"
                r"(?=[^\n]*(?:\biwr\b|\birm\b|invoke-webrequest|invoke-restmethod|"
                r"downloadstring|downloaddata|net\.webclient|\bcurl\b|\bwget\b|https?://))"
                r"|(?:\biwr\b|\birm\b|invoke-webrequest|invoke-restmethod|downloadstring)[^\n]*\|[ \t]*"
                r"(?:iex|invoke-expression)\b", re.I), "runs a downloaded PowerShell script",
     ("iex", "invoke-expression", "iwr", "irm", "invoke-webrequest", "invoke-restmethod", "downloadstring"), True),
    (re.compile(r"\b(?:exec|eval)\s*\((?!\s*\))(?=[^\n]*(?:urlopen|urllib\.request|requests\.get|httpx\.get|"
                r"(?<![\w.])fetch\s*\(|URI\.open|Net::HTTP|b64decode|\batob\s*\(|base64))"),
     "executes downloaded or decoded code", ("exec", "eval"), True),
)

# -- hide-from-user
_NEG = r"(?:do\s+not|don[’']?t|never|must\s+not|mustn[’']?t|should\s+not|shouldn[’']?t|avoid)"
_WHO = r"(?:the\s+)?(?:user|human|operator)s?\b"
_WHO_POSS = r"(?:the\s+)?(?:user|human|operator)(?:['’]s|s['’]?)?"
_NEG_WORDS = ("do", "don", "never", "must", "should", "avoid")
_HIDE_RULES = (   # (regex, prose only, skip when negated before, the words its matches start with)
    (re.compile(rf"\b{_NEG}\s+(?:\w+\s+){{0,2}}?(?:tell(?:ing)?|inform(?:ing)?|reveal(?:ing)?|mention(?:ing)?|"
                rf"disclos(?:e|ing))\s+(?:(?:this|that|it|anything|any\s+of\s+this|about\s+\w+|the\s+\w+)\s+)?"
                rf"(?:to\s+)?{_WHO}(?!['’]s|\s+to\b)", re.I), False, False, _NEG_WORDS),
    (re.compile(rf"\b{_NEG}\s+let(?:ting)?\s+{_WHO}\s+(?:know|notice|find\s+out)\b", re.I), False, False, _NEG_WORDS),
    (re.compile(rf"\bwithout\s+(?:(?:telling|informing|notifying|alerting|letting)\s+{_WHO}|"
                rf"{_WHO_POSS}\s+(?:knowledge|knowing|noticing|awareness))", re.I), False, True, ("without",)),
    (re.compile(rf"\bhid(?:e|ing)\s+(?:[\w'’-]+\s+){{0,4}}?from\s+{_WHO}", re.I), False, True, ("hid",)),
    (re.compile(rf"\bkeep\s+(?:\w+\s+){{0,3}}?(?:secret|hidden)\s+from\s+{_WHO}", re.I), False, True, ("keep",)),
    (re.compile(r"\b(?:do\s+not|don[’']?t|never)\s+mention\s+(?:this|that|it)\b"
                r"(?=\s*(?:[.;:!)]|$|\s+to\s+(?:anyone|anybody|them|{_WHO})))".replace("{_WHO}", _WHO), re.I | re.M),
     False, False, ("do", "don", "never")),
    (re.compile(rf"\b{_WHO}\s+(?:must|should)\s*(?:not|never|n[’']t)\s+(?:know|notice|find\s+out|be\s+told|"
                rf"be\s+informed)\b", re.I), False, False, ("the", "user", "human", "operator")),
    (re.compile(r"\b(?:silently|secretly|covertly)\s+(?:\w+\s+)?(?:delete|remove|erase|wipe|send|upload|post|"
                r"transmit|forward|exfiltrate|run|execute|install|download|copy|overwrite|disable|modify|push)"
                r"(?=[\s.,;:!)`'\"]|$)", re.I), True, True, ("silently", "secretly", "covertly")),
)
_NEGATION_RE = re.compile(r"\b(?:never|not|no|nor|avoid|without\s+first)\b|n[’']t\b|\bdont\b", re.I)
_CLAUSE_START_RE = re.compile(r"(?:^|\b(?:then|and|also|first|next|finally|always|please|just|to|you\s+(?:should|must|"
                              r"can|need\s+to))|[,\-*>`(]|\d+[.)])\s*$", re.I)


_DESCRIPTIVE_RE = re.compile(r"\b(?:would|could|can|may|might|will|does|did|it|which|that|who)\s+$", re.I)


def _negated(text: str, start: int, imperative: bool = False) -> bool:
    """After a negation in the same sentence ("never … without telling the user"), describing rather than
    instructing ("it would silently overwrite"), or, for `imperative` rules, not at the start of a clause
    ("languages silently remove such values")."""
    seg = text[max(0, start - 80):start]
    cut = max(seg.rfind("."), seg.rfind("!"), seg.rfind("?"), seg.rfind(";"), seg.rfind("\n\n"))
    seg = seg[cut + 1:]
    if _NEGATION_RE.search(seg) or _DESCRIPTIVE_RE.search(seg):
        return True
    return imperative and not _CLAUSE_START_RE.search(seg.replace("\n", " ").strip())


# -- unicode
_HIDDEN_RUN_RE = re.compile("[" + _ZW_CHARS + _BIDI_CHARS + "\U000e0000-\U000e007f]+")
_FENCE_RE = re.compile(r"^[ \t]{0,3}(?:`{3,}|~{3,})", re.M)


def _visible_non_ascii(ch: str) -> bool:
    return ord(ch) > 0x7F and not _hidden(ch) and not ch.isspace()


# -- encoded blobs
_RUN_RE = re.compile(r"[A-Za-z0-9+/_-]{%d,}={0,2}" % BLOB_MIN_CHARS)
_ESCAPED_RE = re.compile(r"(?:\\x[0-9a-fA-F]{2}){50,}|(?:0x[0-9a-fA-F]{2}\s*,\s*){50,}")
_WRAPPED_RE = re.compile(r"(?:^[ \t]*['\"]?[A-Za-z0-9+/]{60,}={0,2}['\"]?[ \t]*[,+\\]?[ \t]*\r?\n){4,}", re.M)
_PEM_PUBLIC_RE = re.compile(r"-----BEGIN (?:CERTIFICATE|TRUSTED CERTIFICATE|X509 CRL|PUBLIC KEY|RSA PUBLIC KEY|"
                            r"PGP PUBLIC KEY BLOCK|PGP SIGNATURE|PGP SIGNED MESSAGE|SSH2 PUBLIC KEY)-----")
_HEX_RE = re.compile(r"(?:0x)?[0-9a-fA-F]+")


def _random_looking(core: str) -> bool:
    """Base64 of real data mixes cases and has about 15% digits; identifiers, words and rulers do not."""
    digits = sum(c.isdigit() for c in core)
    return (len(set(core)) >= 20 and digits >= 0.05 * len(core) and re.search(r"[A-Z]", core) is not None
            and re.search(r"[a-z]", core) is not None)


def _decoded_prefix(core: str, is_hex: bool) -> bytes:
    try:
        if is_hex:
            h = core[2:] if core[:2].lower() == "0x" else core
            h = h[:96]
            return bytes.fromhex(h[: len(h) // 2 * 2])
        s = core.replace("-", "+").replace("_", "/").replace("\n", "").replace(" ", "").replace("\t", "")
        s = s.replace("\r", "")[:96]
        return base64.b64decode(s[: len(s) // 4 * 4])
    except (binascii.Error, ValueError):
        return b""


def _judge_decoded(data: bytes) -> tuple[str, str]:
    """('skip'|'high'|'medium', what it decodes to)."""
    if not data:
        return "medium", ""
    if _media_type(data, strong=True) or data.lstrip()[:4] in (b"<svg", b"<?xm") or data.startswith(b'{"version":3'):
        return "skip", ""
    exe = _executable_kind(data + b"\0")
    if exe and exe[0] == "high":
        return "high", f"decodes to an {exe[1]}" if exe[1][0] in "AEIOU" else f"decodes to a {exe[1]}"
    for magic, what in ((b"\x1f\x8b", "gzip data"), (b"PK\x03\x04", "a zip archive"), (b"BZh", "bzip2 data"),
                        (b"\xfd7zXZ", "xz data")):
        if data.startswith(magic):
            return "medium", f"decodes to {what}"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in data)
    if printable >= 0.9 * len(data):
        return "medium", f"decodes to text '{_show(data.decode('latin-1'), 40)}'"
    return "medium", "decodes to binary data"


# -- secrets and the network
_RAW_SRC = (r"(?<![\w.-])(?:nc|ncat|netcat)[ \t]+(?:-[\w-]+[ \t]+)*[\w.-]+[ \t]+\d{2,5}\b"
            r"|\|[ \t]*(?:nc|ncat|netcat)\b|/dev/(?:tcp|udp)/"
            r"|\bsocket\.(?:socket|create_connection)\s*\(|\bsmtplib\.|\bftplib\.|\bnet\.(?:connect|createConnection)\s*\("
            r"|\bscp[ \t]+(?:-\S+[ \t]+)*\S+[ \t]+[\w.-]+@[\w.-]+:")
_RAW_RE = re.compile(_RAW_SRC)
_NET_CALL_SRC = (   # network use as commands and calls
    r"\b(?:curl|wget)[ \t]+(?:-|https?:|['\"$]|[\w-]+\.[A-Za-z]{2,})"
    r"|\b(?:requests|httpx|session|client|aiohttp|axios|http|https)\.(?:get|post|put|patch|delete|head|request|"
    r"stream)\s*\("
    r"|\burlopen\s*\(|\bHTTPS?Connection\s*\(|\brequests\.Session\s*\("
    r"|(?<![\w.])fetch\s*\(|\b(?:window|globalThis|self)\.fetch\s*\(|\bsendBeacon\s*\(|\bWebSocket\s*\("
    r"|\b(?:Invoke-WebRequest|Invoke-RestMethod)\b|(?<![\w-])(?:iwr|irm)[ \t]+(?:-|https?:|['\"$(])"
    r"|\.(?:Upload|Download)(?:String|File|Data|Values)\s*\("
    r"|" + _RAW_SRC)
_NET_NAMES_SRC = (  # network libraries named in code (in prose these are only mentions)
    r"\burllib\.request\b|\bhttp\.client\b|\burllib3\b|\bhttpx\.(?:Async)?Client\b|\baiohttp\.ClientSession\b"
    r"|\bXMLHttpRequest\b|Net\.WebClient|\bNet::HTTP\b|\bURI\.open\b|\bopen-uri\b")
_NET_RE = re.compile(_NET_CALL_SRC + "|" + _NET_NAMES_SRC)
_NET_PROSE_RE = re.compile(_NET_CALL_SRC)
_SEND_RE = re.compile(
    r"\bcurl\b[^\n]*?[ \t](?:-[a-zA-Z]*[dFT]\b|--data(?:-[\w-]+)?\b|--form\b|--upload-file\b|--json\b"
    r"|-X[ \t]*['\"]?(?:POST|PUT|PATCH)\b|--request[ \t]+['\"]?(?:POST|PUT|PATCH)\b)"
    r"|\bwget\b[^\n]*?--(?:post-(?:data|file)|body-(?:data|file)|method[= ]['\"]?(?:POST|PUT|PATCH))"
    r"|\b(?:requests|httpx|session|client|aiohttp|axios|http)\.(?:post|put|patch)\s*\("
    r"|\bmethod\s*[:=]\s*['\"](?:POST|PUT|PATCH|post|put|patch)['\"]"
    r"|\b(?:Request|urlopen)\s*\([^\n]*\bdata\s*="
    r"|-Method[ \t]+['\"]?(?:Post|Put|Patch|POST|PUT|PATCH)\b|[ \t]-(?:Body|InFile)[ \t]"
    r"|\bUpload(?:String|File|Data|Values)(?:Async)?\b|\bsendBeacon\s*\("
    r"|" + _RAW_SRC)
_DATA_MARK_RE = re.compile(
    r"(?:^|[ \t])(?:-[a-zA-Z]*[dFT]|--data(?:-[\w-]+)?|--form(?:-string)?|--upload-file|--json|--post-data|"
    r"--post-file|--body-data|-Body|-InFile)(?=[ \t=\"'@]|$)"
    r"|\b(?:data|json|files|body|content|payload|params|form|text|message)\s*=(?!=)"
    r"|\b(?:data|json|body|params|payload|content|text|message)\s*:"
    r"|['\"](?:data|body|payload|content|text|message)['\"]\s*:"
    r"|\.send(?:all)?\s*\(|\.write\s*\(|\bsendBeacon\s*\("
    r"|\|[ \t]*(?:nc|ncat|netcat|curl|wget)\b|>\s*/dev/(?:tcp|udp)/"
    r"|[?&][\w.-]+=", re.M)
_AUTH_MARK_RE = re.compile(
    r"authorization|bearer|\bbasic\s|\bx-[\w-]*(?:key|token|auth|secret)|api[-_]?key|\bapikey|private-token"
    r"|access[-_]?token|\btoken\b|\bauth(?:orization|enticat\w*|_?token|_?header)?\b|\bcredentials?\b"
    r"|\bpassword\b|\bsecret\b|\bkey\b"
    r"|(?:^|[ \t])(?:-u|--user|-H|--header|--oauth2-bearer|-Headers|-Credential|-Token)(?=[ \t=\"']|$)"
    r"|\bheaders?\b|--with-token\b", re.I | re.M)
_GUARD_RE = re.compile(r"^\s*(?:if|elif|unless|while|until|assert|test|\[\[?|:)(?=[\s(!\[]|$)"
                       r"|(?:\bnot|!|-[zn])\s*[\"'({]*\s*$|\?\?|\|\|\s*$", re.I)
_ASSIGN_RE = re.compile(r"^\s*(?:(?:export|local|readonly|declare|typeset|const|let|var|my|our|final)\s+(?:-\w+\s+)*)?"
                        r"\$?(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)\s*(?::\s*[^=\n]{1,40}?)?\s*:?=(?![=~])")
_LHS_AFTER_RE = re.compile(r"\s*(?::\s*[^=\n]{1,40}?)?\s*:?=(?![=~])")
_SECRET_NAME_RE = re.compile(r"api_?key|apikey|token(?!s|iz)|secret|passw(?:or)?d|private_?key|access_?key|"
                             r"credential|auth_?key|session_?key", re.I)
_ENV_SHELL_RE = re.compile(r"(?<![\w\\$])\$(?:[Ee][Nn][Vv]:)?\{?([A-Za-z_][A-Za-z0-9_]*)")
_ENV_CODE_RE = re.compile(
    r"\bos\.environ\s*\[\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\b(?:os\.environ\.get|os\.getenv|getenv|os\.environ\.setdefault|ENV\.fetch|Deno\.env\.get|"
    r"GetEnvironmentVariable)\s*\(\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\bprocess\.env\.([A-Za-z_]\w*)"
    r"|\bprocess\.env\s*\[\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\bENV\s*\[\s*['\"]([^'\"\n]{1,100})['\"]"
    r"|\bkeyring\.get_password\s*\(\s*['\"]([^'\"\n]{1,100})['\"]")
_CRED_RE = re.compile(
    r"\.ssh/(?:id_[\w-]++(?!\.pub)|identity\b)|(?:~|\$HOME|\$\{HOME\})/\.ssh/?(?![\w/.-])"
    r"|\bid_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?\b(?!\.pub)"
    r"|\.aws/credentials\b|(?<![\w-])[._]netrc\b|\.config/gh/hosts\.ya?ml\b|\.git-credentials\b"
    r"|\.docker/config\.json\b|\.kube/config\b|\.pypirc\b|(?<![\w-])\.npmrc\b"
    r"|application_default_credentials\.json\b|\.config/gcloud/(?:credentials|access_tokens)"
    r"|\.azure/(?:accessTokens|msal_token_cache)|\.gnupg/(?:private-keys|secring)"
    r"|\bsecurity[ \t]+(?:find-(?:generic|internet)-password|dump-keychain)\b|\.keychain(?:-db)?\b"
    r"|\bKeychains/|\bsecret-tool[ \t]+lookup\b|/etc/shadow\b")
_CRED_EXEMPT_RE = re.compile(r"(?:[ \t]-i|[ \t]-f|IdentityFile[ \t=]|ssh-add|chmod[ \t]+[0-7]{3,4}|--netrc-file[ \t=]"
                             r"|--netrc-optional)[ \t]*[\"']?[~\w${}/.-]*$")
_PROSE_READ_RE = re.compile(r"(?:\b(?:cat|type|less|more|head|tail|base64|xxd|od|strings|cp|scp|tar|zip|gc|"
                            r"get-content|read|open|load|copy|send|upload|include|paste|print|output|attach|"
                            r"collect|post|exfiltrate|grab|steal|dump)\b|@)[^\n]*$", re.I)
_DOTENV_RE = re.compile(r"(?:\b(?:cat|type|less|more|head|tail|base64|xxd|Get-Content|gc)[ \t]+(?:-\S+[ \t]+)*"
                        r"|\bopen\s*\(\s*|\bread_?[Ff]ile(?:Sync)?\s*\(\s*|\bPath\s*\(\s*|@|<[ \t]*)"
                        r"['\"]?[\w./~${}-]*?(?<![\w$])\.env(?:\.(?:local|prod|production|dev|development))?\b"
                        r"(?![\w.-])")
_ENV_DUMP_RE = re.compile(
    r"(?<![\w/.-])(?:env|printenv|export[ \t]+-p)(?:[ \t]+\||[ \t]*\|[ \t]+|[ \t]*>)|(?<![\w/.-])printenv[ \t]*$"
    r"|\bos\.environ\.(?:items|values)\s*\("
    r"|\b(?:dict|json\.dumps|str|repr)\s*\(\s*(?:dict\s*\(\s*)?os\.environ\s*\)"
    r"|\bJSON\.stringify\s*\(\s*process\.env\s*[,)]|\bObject\.(?:entries|values)\s*\(\s*process\.env\s*\)"
    r"|\b(?:Get-ChildItem|gci|dir|ls)[ \t]+env:|/proc/(?:self|\d+|\$\w+|\$\{\w+\})/environ\b|\bENV\.to_h(?:ash)?\b",
    re.M)
# the (lower case) words the matches of the regexes above start with: see _Finder.matches
_RAW_WORDS = ("nc", "netcat", "|", "/dev/", "socket.", "smtplib.", "ftplib.", "net.", "scp")
_NET_WORDS = ("curl", "wget", "requests.", "httpx.", "session.", "client.", "aiohttp.", "axios.", "http.", "https.",
              "urlopen", "httpconnection", "httpsconnection", "fetch", "window.", "globalthis.", "self.", "sendbeacon",
              "websocket", "invoke-", "iwr", "irm", ".upload", ".download") + _RAW_WORDS
_NET_NAME_WORDS = ("urllib.request", "http.", "urllib3", "httpx.", "aiohttp.", "xmlhttprequest", "net.", "net::http",
                   "uri.open", "open-uri")
_SEND_WORDS = ("curl", "wget", "requests.", "httpx.", "session.", "client.", "aiohttp.", "axios.", "http.", "method",
               "request", "urlopen", "-method", " -body", "\t-body", " -infile", "\t-infile", "upload", "sendbeacon"
               ) + _RAW_WORDS
_CRED_WORDS = (".ssh/", "~/.ssh", "$home/.ssh", "${home}/.ssh", "id_", ".aws/credentials", ".netrc", "_netrc",
               ".config/gh/", ".git-credentials", ".docker/", ".kube/", ".pypirc", ".npmrc",
               "application_default_credentials", ".config/gcloud/", ".azure/", ".gnupg/", "security", ".keychain",
               "keychains/", "secret-tool", "/etc/shadow")
_ENV_CODE_WORDS = ("os.environ", "os.getenv", "getenv", "env.fetch", "deno.env", "getenvironmentvariable",
                   "process.env", "env", "keyring.")
_ENV_DUMP_WORDS = ("env", "printenv", "export", "os.environ", "dict", "json.dumps", "str", "repr", "json.stringify",
                   "object.", "get-childitem", "gci", "dir", "ls", "/proc/", "env.")
_JOIN_RE = re.compile(r"\\\r?\n|\|[ \t]*\r?\n")     # shell line continuations, kept at the same offsets


class _TextScan:
    """Text rules over a file streamed as decoded text."""

    def __init__(self, ff: _FileFindings, name: str):
        self.ff = ff
        self.code = _is_code(name)
        self.markdown = name.lower().endswith(_MARKDOWN_EXTS)
        self.js = name.lower().endswith((".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".jsx", ".tsx"))
        self.fences: list[int] = []
        self.buf: list[str] = []
        self.buflen = 0
        self.ctx, self.ctx_line, self.first = "", 1, True
        # per-file state of the secret-exfiltration rule
        self.net: tuple[int, str] | None = None
        self.send: tuple[int, str] | None = None
        self.raw: tuple[int, str] | None = None
        self.creds: dict[int, str] = {}
        self.dumps: dict[int, str] = {}
        self.secrets: dict[int, str] = {}                 # line -> a secret read there
        self.vars: dict[str, str] = {}                    # variable -> the secret it was assigned from
        self.flows: dict[int, tuple[str, str, str]] = {}  # line -> (kind, what, excerpt)
        self.unclear: dict[int, str] = {}
        self.seen_uses: set[tuple[int, int]] = set()

    # -- streaming
    def feed(self, text: str) -> None:
        if text:
            self.buf.append(text)
            self.buflen += len(text)
            if self.buflen >= BLOCK_CHARS:
                self._drain(final=False)

    def close(self) -> None:
        self._drain(final=True)
        self._exfil_verdict()

    def _drain(self, final: bool) -> None:
        text = "".join(self.buf)
        self.buf, self.buflen = [], 0
        if not final:
            cut = text.rfind("\n") + 1
            if cut == 0:
                cut = len(text)          # one line longer than a block: scanned in overlapping segments
            if cut < len(text):
                self.buf, self.buflen = [text[cut:]], len(text) - cut
            text = text[:cut]
        if text:
            self._block(text)

    def _block(self, new: str) -> None:
        block = self.ctx + new
        ns = len(self.ctx)
        lines = _Lines(block, self.ctx_line)
        if self.first and new.lstrip("\ufeff").startswith("#!"):
            self.code = True
        if self.markdown:
            for m in _FENCE_RE.finditer(block, ns):
                if len(self.fences) < 100_000:
                    self.fences.append(lines.at(m.start()))
        if not block.isascii():
            self._unicode(block, ns, lines)
        if len(new) >= BLOB_MIN_CHARS:
            self._blobs(block, ns, lines)
        logical = _JOIN_RE.sub(lambda m: " " * len(m.group()), block)
        finder = _Finder(logical)            # (same offsets as the block)
        self._hide(block, ns, lines, finder)
        self._pipe(logical, ns, lines, finder)
        self._exfil(logical, ns, lines, finder)
        # carry the last lines into the next block
        start = len(block)
        for _ in range(CONTEXT_LINES):
            p = block.rfind("\n", 0, max(start - 1, 0))
            if len(block) - (p + 1) > CONTEXT_CHARS:
                break
            start = p + 1
            if p < 0:
                break
        if start == len(block):                 # a segment of a very long line
            start = max(0, len(block) - CONTEXT_CHARS)
        self.ctx, self.ctx_line, self.first = block[start:], lines.at(start), False

    # -- rules
    def _unicode(self, block: str, ns: int, lines: _Lines) -> None:
        per_line: dict[int, list] = {}
        for m in _HIDDEN_RUN_RE.finditer(block):
            if m.end() <= ns:
                continue
            start, run = m.start(), m.group()
            if self.first and start == 0 and run[0] == "\ufeff":       # a byte-order mark
                start, run = 1, run[1:]
                if not run:
                    continue
            line = lines.at(start)
            entry = per_line.setdefault(line, [[], [], [], start, m.end()])
            bidi = [c for c in run if c in _BIDI_CHARS]
            entry[0].extend(bidi)
            invisible = [c for c in run if c not in _BIDI_CHARS]
            if not invisible:
                continue
            prev = block[start - 1] if start > 0 else ""
            tags = [c for c in invisible if 0xE0000 <= ord(c) <= 0xE007F]
            if len(invisible) == 1 and invisible[0] in "\u200c\u200d" and prev and _visible_non_ascii(prev):
                continue     # joiners inside emoji sequences and after letters of scripts that need them
            if tags and len(tags) == len(invisible) and prev == "\U0001f3f4" and run[-1] == "\U000e007f":
                continue     # emoji subdivision flag (tag sequence after U+1F3F4)
            entry[1].extend(invisible)
            entry[2].append("".join(chr(ord(c) - 0xE0000) for c in tags if 0xE0020 <= ord(c) <= 0xE007E))
        for line, (bidi, invisible, tag_texts, start, end) in per_line.items():
            snippet = _excerpt(block, start, end)
            if bidi:
                self.ff.add(line, "high", "bidi-unicode",
                            f"bidirectional control characters ({_describe_chars(bidi)}) can make text read "
                            f"differently from what runs: `{snippet}`")
            if invisible:
                hidden_text = "".join(tag_texts)
                in_code = self.code or (self.markdown and bisect.bisect_left(self.fences, line) % 2 == 1)
                if len(hidden_text.strip()) >= 4:
                    self.ff.add(line, "high", "invisible-unicode",
                                f"invisible tag characters spell hidden text '{_show(hidden_text, 60)}'")
                else:
                    self.ff.add(line, "high" if in_code else "medium", "invisible-unicode",
                                f"invisible characters ({_describe_chars(invisible)}){' in code' if in_code else ''}: "
                                f"`{snippet}`")

    def _blobs(self, block: str, ns: int, lines: _Lines) -> None:
        for m in _RUN_RE.finditer(block):
            if m.end() <= ns or (m.start() > 0 and block[m.start() - 1] in ".%\\"):
                continue                     # the path part of a URL or file name, or a run of escapes
            run = m.group()
            core = run.rstrip("=")
            is_hex = bool(_HEX_RE.fullmatch(core))
            if is_hex:
                if len(set(core.lower())) < 8 or not re.search(r"[a-fA-F]", core) or not re.search(r"\d", core):
                    continue
            elif not _random_looking(core):
                continue
            self._blob(lines.at(m.start()), "hex" if is_hex else "base64", len(run),
                       _decoded_prefix(core, is_hex), run)
        for m in (_ESCAPED_RE.finditer(block) if ("\\x" in block or "0x" in block) else ()):
            if m.end() <= ns:
                continue
            hexes = re.findall(r"(?:\\x|0x)([0-9a-fA-F]{2})", m.group()[:400])
            self._blob(lines.at(m.start()), "escaped-byte", len(m.group()), bytes.fromhex("".join(hexes)), m.group())
        for m in _WRAPPED_RE.finditer(block):
            if m.end() <= ns:
                continue
            before = block[max(0, m.start() - 200):m.start()].rstrip().rsplit("\n", 1)[-1]
            if _PEM_PUBLIC_RE.search(before):
                continue
            core = re.sub(r"[^A-Za-z0-9+/=]", "", m.group())
            if not _random_looking(core):
                continue
            self._blob(lines.at(m.start()), "wrapped base64", len(core), _decoded_prefix(core, False), core)

    def _blob(self, line: int, kind: str, length: int, decoded: bytes, text: str) -> None:
        verdict, what = _judge_decoded(decoded)
        if verdict == "skip":
            return
        self.ff.add(line, "high" if verdict == "high" else "medium", "encoded-blob",
                    f"{kind} blob of {length:,} characters{f' ({what})' if what else ''}: `{_show(text, 28)}`")

    def _hide(self, block: str, ns: int, lines: _Lines, finder: _Finder) -> None:
        for regex, prose_only, guarded, words in _HIDE_RULES:
            if prose_only and self.code:
                continue
            for m in finder.matches(regex, block, words):
                if m.end() <= ns or (guarded and _negated(block, m.start(), imperative=prose_only)):
                    continue
                severity: Severity = "medium" if self.code else "high"
                self.ff.add(lines.at(m.start()), severity, "hide-from-user",
                            f"tells the agent to keep something from the user: `{_show(m.group(), 60)}`")

    def _pipe(self, logical: str, ns: int, lines: _Lines, finder: _Finder) -> None:
        for regex, what, words, anchored in _PIPE_RULES:
            for m in (finder.matches if anchored else finder.finditer)(regex, logical, words):
                if m.end() <= ns:
                    continue
                if what is None:
                    what_ = "pipes a download into a shell" if m.group("fetch") else "pipes decoded data into a shell"
                else:
                    what_ = what
                self.ff.add(lines.at(m.start()), "high", "pipe-to-shell",
                            f"{what_}: `{_excerpt(logical, m.start(), m.end())}`")

    # -- secret-exfiltration
    def _exfil(self, logical: str, ns: int, lines: _Lines, finder: _Finder) -> None:
        for attr, regex, words in (("net", _NET_RE if self.code else _NET_PROSE_RE,
                                    _NET_WORDS + _NET_NAME_WORDS if self.code else _NET_WORDS),
                                   ("send", _SEND_RE, _SEND_WORDS),
                                   ("raw", _RAW_RE, _RAW_WORDS)):
            if getattr(self, attr) is None:
                m = next(iter(finder.matches(regex, logical, words)), None)
                if m:
                    setattr(self, attr, (lines.at(m.start()), _excerpt(logical, m.start(), m.end(), 60)))
        for m in finder.matches(_CRED_RE, logical, _CRED_WORDS):
            if m.end() <= ns:
                continue
            prefix = logical[logical.rfind("\n", 0, m.start()) + 1:m.start()]
            if prefix.endswith("\\") or _CRED_EXEMPT_RE.search(prefix[-200:]):
                continue                     # (`\.netrc` is a regex naming the file, not a read of it)
            if not self.code and not _PROSE_READ_RE.search(prefix[-80:]):
                continue
            _note(self.creds, lines.at(m.start()), f"a credentials file (`{_show(m.group(), 40)}`)")
        for m in finder.finditer(_DOTENV_RE, logical, (".env",)):
            if m.end() > ns:
                _note(self.creds, lines.at(m.start()), f"a .env file (`{_show(m.group(), 40)}`)")
        for m in finder.matches(_ENV_DUMP_RE, logical, _ENV_DUMP_WORDS):
            if m.end() > ns:
                _note(self.dumps, lines.at(m.start()), f"the whole environment (`{_show(m.group(), 40)}`)")
        for m in finder.matches(_ENV_SHELL_RE, logical, ("$",)):
            if self.js and "{" in m.group():
                continue                     # `${name}` in JavaScript is template interpolation, not the environment
            if m.end() > ns and _SECRET_NAME_RE.search(m.group(1)):
                self._use(logical, m.start(), m.end(), f"${m.group(1)}", lines)
        for m in finder.matches(_ENV_CODE_RE, logical, _ENV_CODE_WORDS):
            if m.end() > ns:
                name = next(g for g in m.groups() if g is not None)
                if m.group(6) is not None or _SECRET_NAME_RE.search(name):
                    self._use(logical, m.start(), m.end(), f"keyring:{name}" if m.group(6) else name, lines)
        done: set[str] = set()
        for _ in range(4):           # variables assigned from secrets, and from those
            todo = [v for v in self.vars if v not in done]
            if not todo:
                break
            done.update(todo)
            names = "|".join(re.escape(v) for v in todo)
            regex = re.compile(rf"\$\{{?(?:{names})\b"
                               rf"|(?:(?<=self\.)|(?<=this\.)|(?<![\w'\"$.]))(?:{names})(?![\w'\"(])")
            words = tuple(w for v in todo for w in (v.lower(), "$" + v.lower(), "${" + v.lower()))
            for m in finder.matches(regex, logical, words):
                if m.end() <= ns or _LHS_AFTER_RE.match(logical, m.end()):
                    continue
                var = m.group().lstrip("${")
                self._use(logical, m.start(), m.end(), f"{self.vars.get(var, var)} (via `{var}`)", lines)

    def _use(self, logical: str, start: int, end: int, secret: str, lines: _Lines) -> None:
        """One use of a secret: auth (own use), a flow into a request, an assignment, a guard, or unclear."""
        ls = logical.rfind("\n", 0, start) + 1
        le = logical.find("\n", end)
        le = len(logical) if le < 0 else le
        line = lines.at(start)
        key = (line, start - ls)
        if key in self.seen_uses:
            return
        if len(self.seen_uses) >= 100_000:
            return                           # (memory stays bounded on pathological files)
        self.seen_uses.add(key)
        _note(self.secrets, line, secret.split(" (via")[0])
        prefix = logical[ls:start][-400:]
        after = logical[end:le][:400]
        am = _ASSIGN_RE.match(prefix)
        # auth markers count only right of an assignment (`API_KEY = os.environ[...]` is not auth use); data
        # markers anywhere, since `data={"t": token},` inside a multi-line call looks like an assignment
        auth = max((m.start() for m in _AUTH_MARK_RE.finditer(prefix, am.end() if am else 0)), default=-1)
        data_at = _last_start(_DATA_MARK_RE, prefix)
        if auth > data_at:
            return
        data = data_at >= 0
        if am:
            var = am.group(1)
            if len(var) >= 3 and var not in self.vars and len(self.vars) < 64 and var not in ("self", "this"):
                self.vars[var] = secret.split(" (via")[0]
        on_net = bool(_NET_RE.search(prefix + " " + after))
        if data or on_net:
            _note(self.flows, line, ("net" if on_net else "data", secret,
                                         _excerpt(logical, start, end, 70)))
            return
        if am or _GUARD_RE.search(prefix) or _AUTH_MARK_RE.search(after) or not self.code:
            return              # (in prose, a secret's name is mostly a mention, not a use)
        _note(self.unclear, line, secret)

    def _exfil_verdict(self) -> None:
        rule = "secret-exfiltration"
        for line, what in list(self.creds.items()) + list(self.dumps.items()):
            if self.net:
                self.ff.add(line, "high", rule,
                            f"reads {what} and this file also uses the network (line {self.net[0]}: `{self.net[1]}`)")
            elif line in self.creds:
                self.ff.add(line, "low", rule, f"reads {what}; no network use in this file")
        sent = False
        for line, (kind, secret, snippet) in self.flows.items():
            if kind == "net" or self.send:
                self.ff.add(line, "high", rule, f"sends the secret {secret} over the network: `{snippet}`")
                sent = True
        if sent or not self.secrets:
            return
        line, secret = next(iter(self.secrets.items()))
        if self.raw:
            self.ff.add(line, "high", rule, f"reads {secret} and opens a raw network connection "
                                            f"(line {self.raw[0]}: `{self.raw[1]}`)")
        elif self.unclear and self.send:
            line, secret = next(iter(self.unclear.items()))
            self.ff.add(line, "medium", rule,
                        f"reads {secret} and sends data over the network (line {self.send[0]}: `{self.send[1]}`); "
                        "check the secret only goes to its own service")


def _note(seen: dict, key, value) -> None:
    """Remember the first `value` per key, for at most 1,000 keys (memory stays bounded)."""
    if key not in seen and len(seen) < 1000:
        seen[key] = value


def _describe_chars(chars: list[str]) -> str:
    counts = Counter(chars)
    parts = []
    for ch, n in counts.most_common(3):
        o = ord(ch)
        name = unicodedata.name(ch, "") or ("TAG" if 0xE0000 <= o <= 0xE007F else "")
        parts.append(f"{n}× U+{o:04X}{f' {name}' if name else ''}")
    if len(counts) > 3:
        parts.append("…")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# one file's content

class _FileScan:
    """Judges one file from its bytes: magic bytes first, then text rules when it is text."""

    def __init__(self, report: ScanReport, label: str, name: str):
        self.report, self.label, self.name = report, label, name
        self.ff = _FileFindings(label)
        self.text: _TextScan | None = None
        self.decoder = None
        self.started = False

    def feed(self, data: bytes) -> None:
        if not self.started:
            self.started = True
            self._start(data)
        self.report.bytes_scanned += len(data)
        if self.text is not None and data:
            self.text.feed(self.decoder.decode(data))

    def _start(self, head: bytes) -> None:
        exe = _executable_kind(head)
        if exe:
            self.ff.add(None, exe[0], "executable-binary", f"{exe[1]} (a program that runs outside the agent's view)")
            return
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            encoding = "utf-16"
        elif b"\0" in head[:HEAD_BYTES] or _media_type(head):
            return                                        # binary: judged by type only
        else:
            encoding = "utf-8"
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.text = _TextScan(self.ff, self.name)

    def close(self) -> None:
        if not self.started:
            self.feed(b"")
        if self.text is not None:
            self.text.feed(self.decoder.decode(b"", final=True))
            self.text.close()
        self.report.findings.extend(self.ff.done())


def _read_head(reader, n: int = HEAD_BYTES) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = reader.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# archives

class _Bomb(Exception):
    def __init__(self, kind: str, message: str, owner: object = None):
        super().__init__(message)
        self.kind, self.message, self.owner = kind, message, owner


class _Budget:
    """The uncompressed bytes one top-level archive may produce, nested archives included."""

    def __init__(self, limit: int = MAX_TOTAL_UNCOMPRESSED):
        self.limit, self.used, self.reported = limit, 0, False

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise _Bomb("budget", f"expands past {_size(self.limit)} uncompressed (while reading {where}); "
                                  "the rest was not read")


class _RawCount:
    def __init__(self, src):
        self.src, self.count = src, 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.count += len(data)
        return data


class _Counted:
    """Reads from `src`, charging the budget; with `raw`, also stops a stream that expands over the ratio."""

    def __init__(self, src, budget: _Budget, where: str, raw: _RawCount | None = None):
        self.src, self.budget, self.where, self.raw, self.count = src, budget, where, raw, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while chunk := self.read(CHUNK_BYTES):
                parts.append(chunk)
            return b"".join(parts)
        data = self.src.read(n)
        if data:
            self.count += len(data)
            self.budget.take(len(data), self.where)
            raw = self.raw
            if raw is not None and self.count >= RATIO_MIN_BYTES and self.count > MAX_RATIO * max(raw.count, 1):
                raise _Bomb("ratio", f"expands more than {MAX_RATIO}× ({_size(self.count)} from "
                                     f"{_size(self.raw.count)} so far); not read further", owner=self)
        return data


class _Chain:
    """`head` then the rest of `src`."""

    def __init__(self, head: bytes, src):
        self.head, self.src = head, src

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                data, self.head = self.head + self.src.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data
        return self.src.read(n)


def _escapes(name: str) -> bool:
    """Absolute, or with a `..` component (even one that would land back inside: extractors differ)."""
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(re.match(r"^[A-Za-z]:", n)) or ".." in n.split("/")


def _judge_link(report: ScanReport, label: str, member: str, target: str, hard: bool) -> None:
    kind = "hard link" if hard else "symlink"
    t = target.replace("\\", "/")
    if t.startswith("/") or re.match(r"^[A-Za-z]:", t):
        escapes = True
    else:
        base = "" if hard else posixpath.dirname(member.replace("\\", "/"))
        norm = posixpath.normpath(posixpath.join(base, t)) if t else "."
        escapes = norm == ".." or norm.startswith("../")
    if escapes:
        _add(report, label, "high", "symlink-escape", f"{kind} points outside the pack: -> {_show(target, 60)}")
    else:
        _add(report, label, "low", "archive-link", f"{kind} inside the archive: -> {_show(target, 60)}")


def _scan_member(report: ScanReport, reader, label: str, name: str, level: int, budget: _Budget) -> None:
    """One archive member (at `level` archives deep), streamed: a nested archive or a file."""
    report.files_scanned += 1
    head = _read_head(reader)
    kind = _archive_kind(head)
    if kind and kind.startswith("unsupported:"):
        _add(report, label, "medium", "unscanned", f"{kind.split(':')[1]} archive: this format cannot be inspected")
        return
    if kind:
        if level > 1:
            _add(report, label, "high", "unscanned", "archive nested more than one level deep; not scanned")
            return
        _open_archive(report, kind, _Chain(head, reader), label, level, budget, seekable=False)
        return
    scan = _FileScan(report, label, name)
    try:
        scan.feed(head)
        while chunk := reader.read(CHUNK_BYTES):
            scan.feed(chunk)
    finally:
        scan.close()


def _open_archive(report: ScanReport, kind: str, f, label: str, level: int, budget: _Budget, seekable: bool) -> None:
    """An archive at `level` (0: a file on disk); its members are at level + 1."""
    try:
        if kind == "zip":
            if not seekable:
                data = _read_head(f, MAX_NESTED_ZIP_BYTES + 1)
                if len(data) > MAX_NESTED_ZIP_BYTES:
                    _add(report, label, "medium", "unscanned",
                         f"nested zip larger than {_size(MAX_NESTED_ZIP_BYTES)}; not scanned")
                    return
                f = io.BytesIO(data)
            with zipfile.ZipFile(f) as zf:
                _scan_zip(report, zf, label, level, budget)
        elif kind == "tar":
            _scan_tar(report, _Counted(f, budget, label) if level == 0 else f, label, level, budget)
        else:
            raw = _RawCount(f)
            opener = {"gz": lambda: gzip.GzipFile(fileobj=raw, mode="rb"), "bz2": lambda: bz2.BZ2File(raw),
                      "xz": lambda: lzma.LZMAFile(raw)}[kind]
            out = _Counted(opener(), budget, label, raw=raw)
            try:
                head = _read_head(out, 512)
                if _is_tar_header(head):
                    _scan_tar(report, _Chain(head, out), label, level, budget)
                else:
                    base = posixpath.basename(label.rsplit("!", 1)[-1])
                    inner = re.sub(r"\.(?:gz|tgz|gzip|bz2|xz)$", "", base, flags=re.I) or "data"
                    _scan_member(report, _Chain(head, out), f"{label}!{inner}", inner, level + 1, budget)
            except _Bomb as bomb:
                if bomb.owner is not out:
                    raise
                _add(report, label, "high", "archive-bomb", f"compressed stream {bomb.message}")
    except _Bomb:
        raise
    except Exception as exc:   # malformed input is a finding, never a crash
        _add(report, label, "medium", "unscanned", f"corrupt or unreadable archive ({type(exc).__name__}: "
                                                   f"{_show(str(exc), 60)}); the rest was not scanned")


def _scan_zip(report: ScanReport, zf: zipfile.ZipFile, label: str, level: int, budget: _Budget) -> None:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        _add(report, label, "high", "archive-bomb", f"{len(infos):,} members (limit {MAX_MEMBERS:,}); "
                                                    f"only the first {MAX_MEMBERS:,} were scanned")
        infos = infos[:MAX_MEMBERS]
    declared = sum(i.file_size for i in infos)
    over = declared > budget.remaining
    if over:
        _add(report, label, "high", "archive-bomb",
             f"declares {_size(declared)} uncompressed (limit {_size(MAX_TOTAL_UNCOMPRESSED)}); "
             "members past the limit were not read")
    for info in infos:
        name = info.filename
        mlabel = f"{label}!{name}"
        if _escapes(name):
            _add(report, mlabel, "high", "archive-path-escape",
                 f"member path leaves the extraction folder: {_show(name, 60)}")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            with zf.open(info) as fh:
                target = fh.read(4097)
            _judge_link(report, mlabel, name, target[:4096].decode("utf-8", "replace"), hard=False)
            continue
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            _add(report, mlabel, "high", "unscanned", "encrypted member; its content cannot be checked")
            continue
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            _add(report, mlabel, "high", "archive-bomb",
                 f"expands {info.file_size // max(info.compress_size, 1):,}× ({_size(info.compress_size)} to "
                 f"{_size(info.file_size)}); not read")
            continue
        if info.file_size > budget.remaining:
            if not over:
                _add(report, mlabel, "high", "archive-bomb",
                     f"{_size(info.file_size)} uncompressed is past the archive's limit of "
                     f"{_size(MAX_TOTAL_UNCOMPRESSED)}; not read")
            continue
        try:
            with zf.open(info) as fh:
                _scan_member(report, _Counted(fh, budget, mlabel), mlabel, name, level + 1, budget)
        except _Bomb:
            raise
        except Exception as exc:
            _add(report, mlabel, "medium", "unscanned",
                 f"member could not be read ({type(exc).__name__}: {_show(str(exc), 60)})")


def _scan_tar(report: ScanReport, src, label: str, level: int, budget: _Budget) -> None:
    with tarfile.open(fileobj=src, mode="r|") as tf:
        count = 0
        for m in tf:
            count += 1
            if count > MAX_MEMBERS:
                _add(report, label, "high", "archive-bomb", f"more than {MAX_MEMBERS:,} members; the rest was not read")
                return
            mlabel = f"{label}!{m.name}"
            if _escapes(m.name):
                _add(report, mlabel, "high", "archive-path-escape",
                     f"member path leaves the extraction folder: {_show(m.name, 60)}")
            if m.issym() or m.islnk():
                _judge_link(report, mlabel, m.name, m.linkname, hard=m.islnk())
                continue
            if m.ischr() or m.isblk() or m.isfifo():
                _add(report, mlabel, "medium", "special-file", "device or FIFO member; not read")
                continue
            if not m.isfile():
                continue
            if m.size > budget.remaining:
                raise _Bomb("budget", f"member {m.name} declares {_size(m.size)} uncompressed, past the limit of "
                                      f"{_size(MAX_TOTAL_UNCOMPRESSED)}; the rest was not read")
            fh = tf.extractfile(m)
            if fh is not None:
                _scan_member(report, fh, mlabel, m.name, level + 1, budget)


def _scan_archive_file(report: ScanReport, kind: str, f, label: str) -> None:
    """An archive on disk: its own allowance of uncompressed bytes; a bomb stops it."""
    budget = _Budget()
    try:
        _open_archive(report, kind, f, label, 0, budget, seekable=True)
    except _Bomb as bomb:
        _add(report, label, "high", "archive-bomb", bomb.message)


# ---------------------------------------------------------------------------------------------------------------
# entry points

def scan_tree(root: Path) -> ScanReport:
    """Every file under `root`, read whole; symlinks judged, not followed; archives looked into."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    real_root = os.path.realpath(root)
    report = ScanReport([], 0, 0)

    def rel(path: str) -> str:
        return Path(os.path.relpath(path, root)).as_posix()

    def on_error(exc: OSError) -> None:
        _add(report, rel(exc.filename) if exc.filename else ".", "medium", "unscanned",
             f"folder could not be read ({exc.strerror or exc})")

    for dirpath, dirnames, filenames in os.walk(root, topdown=True, onerror=on_error, followlinks=False):
        dirnames.sort()
        for d in list(dirnames):
            p = os.path.join(dirpath, d)
            if os.path.islink(p):
                dirnames.remove(d)
                _judge_symlink(report, p, rel(p), real_root)
        for fname in sorted(filenames):
            p = os.path.join(dirpath, fname)
            _scan_path(report, p, rel(p), real_root)
    return report


def _judge_symlink(report: ScanReport, path: str, label: str, real_root: str) -> None:
    try:
        target = os.readlink(path)
    except OSError as exc:
        _add(report, label, "medium", "unscanned", f"symlink could not be read ({exc.strerror or exc})")
        return
    resolved = os.path.realpath(path)
    if resolved != real_root and not resolved.startswith(real_root.rstrip(os.sep) + os.sep):
        _add(report, label, "high", "symlink-escape", f"symlink points outside the pack: -> {_show(target, 60)}")


def _scan_path(report: ScanReport, path: str, label: str, real_root: str) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        _add(report, label, "medium", "unscanned", f"file could not be read ({exc.strerror or exc})")
        return
    if stat.S_ISLNK(st.st_mode):
        _judge_symlink(report, path, label, real_root)
        return
    if not stat.S_ISREG(st.st_mode):
        _add(report, label, "medium", "special-file", "device, FIFO or socket in the pack; not read")
        return
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        _add(report, label, "medium", "unscanned", f"file could not be read ({exc.strerror or exc})")
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):     # swapped since lstat
            _add(report, label, "medium", "special-file", "not a regular file; not read")
            return
        report.files_scanned += 1
        try:
            head = _read_head(f)
            kind = _archive_kind(head)
            if kind and kind.startswith("unsupported:"):
                report.bytes_scanned += st.st_size
                _add(report, label, "medium", "unscanned",
                     f"{kind.split(':')[1]} archive: this format cannot be inspected")
                return
            if kind:
                report.bytes_scanned += st.st_size
                f.seek(0)
                _scan_archive_file(report, kind, f, label)
                return
            scan = _FileScan(report, label, label)
            try:
                scan.feed(head)
                while chunk := f.read(CHUNK_BYTES):
                    scan.feed(chunk)
            finally:
                scan.close()
        except OSError as exc:
            _add(report, label, "medium", "unscanned", f"file could not be read ({exc.strerror or exc})")


def scan_archive(path: Path) -> ScanReport:
    """A .zip, .tar, .tar.gz/.tgz (or .tar.bz2/.tar.xz) pack, read without extracting anything to disk."""
    path = Path(path)
    report = ScanReport([], 0, 0)
    with open(path, "rb") as f:
        head = _read_head(f)
        kind = _archive_kind(head)
        if kind is None or kind.startswith("unsupported:"):
            raise ValueError(f"{path.name}: not a zip or tar archive")
        report.files_scanned += 1
        report.bytes_scanned += os.fstat(f.fileno()).st_size
        f.seek(0)
        _scan_archive_file(report, kind, f, path.name)
    return report

"""What the scan reports: `Finding`s in a `ScanReport`, one file's findings deduplicated and capped, and how
findings quote what they found (hidden characters made visible, lines shortened)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from loopwright.skills.scan import limits

Severity = Literal["low", "medium", "high"]
_RANK = {"low": 0, "medium": 1, "high": 2}


# each rule's category (after the MaliciousAgentSkillsBench taxonomy; "pack structure" for archives and links)
CATEGORIES = {
    "pipe-to-shell": "remote code execution", "remote-code": "remote code execution",
    "executable-binary": "obfuscation", "encoded-blob": "obfuscation", "obfuscated-code": "obfuscation",
    "bidi-unicode": "obfuscation",
    "secret-exfiltration": "exfiltration", "data-upload": "exfiltration", "dns-exfiltration": "exfiltration",
    "foreign-git-push": "exfiltration",
    "credential-request": "credential theft",
    "invisible-unicode": "hidden instructions", "hide-from-user": "hidden instructions",
    "hidden-comment": "hidden instructions",
    "privilege-escalation": "privilege escalation", "persistence": "privilege escalation",
    "instruction-override": "instruction override",
    "reverse-shell": "reverse shell",
    "context-leakage": "context leakage",
    "manipulation": "behaviour manipulation",
    "filesystem-scan": "file-system scan",
    "hardcoded-secret": "hard-coded token",
    "destructive-command": "destructive command",
    "broad-allowed-tools": "over-broad allowed-tools",
    "install-from-url": "unpinned dependency", "unpinned-install": "unpinned dependency",
}


@dataclass(frozen=True)
class Finding:
    path: str        # relative to the scanned root (inside an archive: "archive.zip!inner/path")
    line: int | None
    severity: Severity
    rule: str
    message: str
    category: str = ""      # from the rule (CATEGORIES) when not given

    def __post_init__(self) -> None:
        if not self.category:
            object.__setattr__(self, "category", CATEGORIES.get(self.rule, "pack structure"))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity}: {where}: {self.message} [{self.rule}] ({self.category})"


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


def show_size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}" if n >= 10 * scale else f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


ZW_CHARS = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e"
BIDI_CHARS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def hidden(ch: str) -> bool:
    o = ord(ch)
    return (ch in ZW_CHARS or ch in BIDI_CHARS or 0xE0000 <= o <= 0xE007F or (o < 0x20 and ch not in "\t\n\r")
            or 0x7F <= o < 0xA0 or ch in "\u200e\u200f\u00ad\ufffd")


def show(text: str, limit: int = 80) -> str:
    """One printable line: hidden characters written as <U+XXXX>, whitespace collapsed, shortened."""
    s = "".join(f"<U+{ord(c):04X}>" if hidden(c) else c for c in text)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def excerpt(text: str, start: int, end: int, limit: int = 80) -> str:
    """The match in its line, shortened to about `limit` characters."""
    ls = text.rfind("\n", 0, start) + 1
    le = text.find("\n", end)
    le = len(text) if le < 0 else le
    lo = max(ls, start - 20)
    hi = min(le, max(end, start + limit))
    seg = text[lo:hi]
    return show(("…" if lo > ls else "") + seg, limit)


class FileFindings:
    """One file's findings: deduplicated per (rule, line), the higher severity kept, capped per rule."""

    def __init__(self, path: str):
        self.path = path
        self.items: list[Finding] = []
        self._index: dict[tuple[str, int | None], int] = {}
        self._count: Counter = Counter()
        self._dropped: Counter = Counter()

    def add(self, line: int | None, severity: Severity, rule: str, message: str, category: str = "") -> None:
        key = (rule, line)
        i = self._index.get(key)
        if i is not None:
            if _RANK[severity] > _RANK[self.items[i].severity]:
                self.items[i] = Finding(self.path, line, severity, rule, message, category)
            return
        if self._count[(rule, severity)] >= limits.MAX_FINDINGS_PER_RULE:
            self._dropped[(rule, severity)] += 1
            return
        self._count[(rule, severity)] += 1
        self._index[key] = len(self.items)
        self.items.append(Finding(self.path, line, severity, rule, message, category))

    def done(self) -> list[Finding]:
        out = sorted(self.items, key=lambda f: f.line or 0)
        for (rule, severity), n in self._dropped.items():
            out.append(Finding(self.path, None, severity, rule,
                               f"{n} more {severity} {rule} finding{'' if n == 1 else 's'} in this file not listed"))
        return out


def add_finding(report: ScanReport, path: str, severity: Severity, rule: str, message: str,
                line: int | None = None) -> None:
    report.findings.append(Finding(path, line, severity, rule, message))

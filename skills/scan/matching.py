"""Where the text rules run: line numbers of positions in a block, each rule's regex tried only where its
keywords occur, and whether a match sits after a negation ("never … without telling the user")."""

from __future__ import annotations

import bisect
import re


class Lines:
    """Line numbers of positions in a block (newline index built on first use)."""

    def __init__(self, text: str, base: int):
        self.text, self.base, self._nl = text, base, None

    def at(self, pos: int) -> int:
        if self._nl is None:
            self._nl = [m.start() for m in re.finditer("\n", self.text)]
        return self.base + bisect.bisect_left(self._nl, pos)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Finder:
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

    def matches(self, regex: re.Pattern, text: str, keywords: tuple[str, ...],
                word_start: bool = False) -> list[re.Match]:
        """Matches of `regex` starting exactly where one of `keywords` starts (every alternative of such a
        regex begins with one of them), left to right, without overlaps. Costs one anchored attempt per
        keyword occurrence, however dense the keywords; `word_start`: only where a word starts (for regexes
        that begin with \\b), so "act" inside "contact" costs nothing."""
        low, found = self.low, []
        for kw in keywords:
            i = low.find(kw)
            while i >= 0:
                if word_start and (low[i - 1].isalnum() or low[i - 1] == "_"):
                    i = low.find(kw, i + 1)
                    continue
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


_NEGATION_RE = re.compile(r"\b(?:never|not|no|nor|avoid|without\s+first)\b|n[’']t\b|\bdont\b", re.I)
_CLAUSE_START_RE = re.compile(r"(?:^|\b(?:then|and|also|first|next|finally|always|please|just|to|you\s+(?:should|must|"
                              r"can|need\s+to))|[,:\-*>`(]|\d+[.)])\s*$", re.I)
_DESCRIPTIVE_RE = re.compile(r"\b(?:would|could|can|may|might|will|does|did|it|which|that|who)\s+$", re.I)


def negated(text: str, start: int, imperative: bool = False) -> bool:
    """After a negation in the same sentence ("never … without telling the user"), describing rather than
    instructing ("it would silently overwrite"), or, for `imperative` rules, not at the start of a clause
    ("languages silently remove such values")."""
    seg = text[max(0, start - 80):start]
    cut = max(seg.rfind("."), seg.rfind("!"), seg.rfind("?"), seg.rfind(";"), seg.rfind("\n\n"))
    seg = seg[cut + 1:]
    if _NEGATION_RE.search(seg) or _DESCRIPTIVE_RE.search(seg):
        return True
    return imperative and not _CLAUSE_START_RE.search(seg.replace("\n", " ").strip())


# describing an attack rather than making one: "if a page tells you to ignore previous instructions, refuse", "the
# scan looks for `rm -rf ~`"
_DESCRIBED_RE = re.compile(r"\b(?:tells?|told|asks?|instructs?|tries|try|attempts?)\s+(?:you\s+)?to\b"
                           r"|\b(?:says?|said|claims?|contains?|such\s+as|like|e\.g\.|phrases?|injection|untrusted|"
                           r"malicious|attack\w*|detect\w*|refuse[sd]?|whether|looks?\s+for|catch(?:es)?|flags?|warns?"
                           r"\s+about)\b", re.I)
_QUOTE_OPEN_RE = re.compile(r"[\"“]\s*$")


def described(text: str, start: int, quoted: bool = True) -> bool:
    """The sentence before `start` reports what it is about rather than asking for it, or (`quoted`) quotes it
    (not for commands, whose own quotes would count)."""
    seg = text[max(0, start - 80):start]
    cut = max(seg.rfind(". "), seg.rfind("!"), seg.rfind("?"), seg.rfind(";"), seg.rfind("\n\n"))
    seg = seg[cut + 1:]
    return _DESCRIBED_RE.search(seg) is not None or (quoted and _QUOTE_OPEN_RE.search(seg) is not None)

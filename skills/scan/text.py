"""One file's content: binary files judged by their magic bytes, text streamed in blocks through the text rules
(pipe-to-shell, hide-from-user, invisible and bidi Unicode, encoded blobs here; secret-exfiltration in
exfiltration.py, what commands do in behaviour.py, instructions aimed at the agent in prompt.py)."""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import re
import unicodedata
from collections import Counter

from loopwright.skills.scan import limits
from loopwright.skills.scan.behaviour import Behaviour
from loopwright.skills.scan.exfiltration import Exfiltration
from loopwright.skills.scan.filetypes import MARKDOWN_EXTS, executable_kind, is_code, media_type
from loopwright.skills.scan.matching import Finder, Lines, negated
from loopwright.skills.scan.prompt import Prompt
from loopwright.skills.scan.report import (
    BIDI_CHARS,
    ZW_CHARS,
    FileFindings,
    ScanReport,
    Severity,
    excerpt,
    hidden,
    show,
)

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

_DOWNLOAD_RE = re.compile(r"urlopen|urllib\.request|requests\.get|httpx\.get|fetch\s*\(|URI\.open|Net::HTTP")

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
_UNTIL_RE = re.compile(r"[^.;!?\n]{0,80}?\b(?:until|unless)\b", re.I)

# -- unicode
_HIDDEN_RUN_RE = re.compile("[" + ZW_CHARS + BIDI_CHARS + "\U000e0000-\U000e007f]+")
_FENCE_RE = re.compile(r"^[ \t]{0,3}(?:`{3,}|~{3,})", re.M)


def _visible_non_ascii(ch: str) -> bool:
    return ord(ch) > 0x7F and not hidden(ch) and not ch.isspace()


# -- encoded blobs
_RUN_RE = re.compile(r"[A-Za-z0-9+/_-]{%d,}={0,2}" % limits.BLOB_MIN_CHARS)
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
    if media_type(data, strong=True) or data.lstrip()[:4] in (b"<svg", b"<?xm") or data.startswith(b'{"version":3'):
        return "skip", ""
    exe = executable_kind(data + b"\0")
    if exe and exe[0] == "high":
        return "high", f"decodes to an {exe[1]}" if exe[1][0] in "AEIOU" else f"decodes to a {exe[1]}"
    for magic, what in ((b"\x1f\x8b", "gzip data"), (b"PK\x03\x04", "a zip archive"), (b"BZh", "bzip2 data"),
                        (b"\xfd7zXZ", "xz data")):
        if data.startswith(magic):
            return "medium", f"decodes to {what}"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in data)
    if printable >= 0.9 * len(data):
        return "medium", f"decodes to text '{show(data.decode('latin-1'), 40)}'"
    return "medium", "decodes to binary data"


_JOIN_RE = re.compile(r"\\\r?\n|\|[ \t]*\r?\n")     # shell line continuations, kept at the same offsets


class _TextScan:
    """Text rules over a file streamed as decoded text."""

    def __init__(self, ff: FileFindings, name: str):
        self.ff = ff
        self.code = is_code(name)
        self.markdown = name.lower().endswith(MARKDOWN_EXTS)
        self.fences: list[int] = []
        self.buf: list[str] = []
        self.buflen = 0
        self.ctx, self.ctx_line, self.first = "", 1, True
        js = name.lower().endswith((".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".jsx", ".tsx"))
        self.exfil = Exfiltration(ff, js)
        self.behaviour = Behaviour(ff, name)
        self.prompt = Prompt(ff, name, self.markdown)

    # -- streaming
    def feed(self, text: str) -> None:
        if text:
            self.buf.append(text)
            self.buflen += len(text)
            if self.buflen >= limits.BLOCK_CHARS:
                self._drain(final=False)

    def close(self) -> None:
        self._drain(final=True)
        self.exfil.verdict()
        self.behaviour.verdict(uses_network=self.exfil.net is not None)

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
        lines = Lines(block, self.ctx_line)
        if self.first and new.lstrip("\ufeff").startswith("#!"):
            self.code = True
        if self.markdown:
            for m in _FENCE_RE.finditer(block, ns):
                if len(self.fences) < 100_000:
                    self.fences.append(lines.at(m.start()))
        if not block.isascii():
            self._unicode(block, ns, lines)
        if len(new) >= limits.BLOB_MIN_CHARS:
            self._blobs(block, ns, lines)
        logical = _JOIN_RE.sub(lambda m: " " * len(m.group()), block)
        finder = Finder(logical)            # (same offsets as the block)
        self._hide(block, ns, lines, finder)
        self._pipe(logical, ns, lines, finder)
        self.exfil.block(logical, ns, lines, finder, self.code)
        self.behaviour.block(logical, ns, lines, finder, self.code)
        self.prompt.block(block, ns, lines, finder, self.code, self.first)
        # carry the last lines into the next block
        start = len(block)
        for _ in range(limits.CONTEXT_LINES):
            p = block.rfind("\n", 0, max(start - 1, 0))
            if len(block) - (p + 1) > limits.CONTEXT_CHARS:
                break
            start = p + 1
            if p < 0:
                break
        if start == len(block):                 # a segment of a very long line
            start = max(0, len(block) - limits.CONTEXT_CHARS)
        self.ctx, self.ctx_line, self.first = block[start:], lines.at(start), False

    # -- rules
    def _unicode(self, block: str, ns: int, lines: Lines) -> None:
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
            bidi = [c for c in run if c in BIDI_CHARS]
            entry[0].extend(bidi)
            invisible = [c for c in run if c not in BIDI_CHARS]
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
            snippet = excerpt(block, start, end)
            if bidi:
                self.ff.add(line, "high", "bidi-unicode",
                            f"bidirectional control characters ({_describe_chars(bidi)}) can make text read "
                            f"differently from what runs: `{snippet}`")
            if invisible:
                hidden_text = "".join(tag_texts)
                in_code = self.code or (self.markdown and bisect.bisect_left(self.fences, line) % 2 == 1)
                if len(hidden_text.strip()) >= 4:
                    self.ff.add(line, "high", "invisible-unicode",
                                f"invisible tag characters spell hidden text '{show(hidden_text, 60)}'")
                else:
                    self.ff.add(line, "high" if in_code else "medium", "invisible-unicode",
                                f"invisible characters ({_describe_chars(invisible)}){' in code' if in_code else ''}: "
                                f"`{snippet}`")

    def _blobs(self, block: str, ns: int, lines: Lines) -> None:
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
                    f"{kind} blob of {length:,} characters{f' ({what})' if what else ''}: `{show(text, 28)}`")

    def _hide(self, block: str, ns: int, lines: Lines, finder: Finder) -> None:
        for regex, prose_only, guarded, words in _HIDE_RULES:
            if prose_only and self.code:
                continue
            for m in finder.matches(regex, block, words):
                if m.end() <= ns or (guarded and negated(block, m.start(), imperative=prose_only)):
                    continue
                if _UNTIL_RE.match(block, m.end()):
                    continue        # "do not tell the user it is finished until the test passes": an order of steps
                severity: Severity = "medium" if self.code else "high"
                self.ff.add(lines.at(m.start()), severity, "hide-from-user",
                            f"tells the agent to keep something from the user: `{show(m.group(), 60)}`")

    def _pipe(self, logical: str, ns: int, lines: Lines, finder: Finder) -> None:
        for regex, what, words, anchored in _PIPE_RULES:
            for m in (finder.matches if anchored else finder.finditer)(regex, logical, words):
                if m.end() <= ns:
                    continue
                if what is None:
                    what_ = "pipes a download into a shell" if m.group("fetch") else "pipes decoded data into a shell"
                else:
                    what_ = what
                rest = logical[m.start():_line_end(logical, m.end())]
                decoded = (what is None and not m.group("fetch")) or (
                    what_.startswith("executes") and not _DOWNLOAD_RE.search(rest))
                self.ff.add(lines.at(m.start()), "high", "pipe-to-shell",
                            f"{what_}: `{excerpt(logical, m.start(), m.end())}`", "obfuscation" if decoded else "")


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


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


class FileScan:
    """Judges one file from its bytes: magic bytes first, then text rules when it is text."""

    def __init__(self, report: ScanReport, label: str, name: str):
        self.report, self.label, self.name = report, label, name
        self.ff = FileFindings(label)
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
        exe = executable_kind(head)
        if exe:
            self.ff.add(None, exe[0], "executable-binary", f"{exe[1]} (a program that runs outside the agent's view)")
            return
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            encoding = "utf-16"
        elif b"\0" in head[:limits.HEAD_BYTES] or media_type(head):
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

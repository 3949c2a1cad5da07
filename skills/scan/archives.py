"""Archives read without extracting anything: zip, tar and compressed streams, one level of nesting, under one
allowance of uncompressed bytes; escaping paths and links, bombs and what cannot be read are findings."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import re
import stat
import tarfile
import zipfile
from pathlib import Path

from loopwright.skills.scan import limits
from loopwright.skills.scan.filetypes import archive_kind, is_tar_header, read_head
from loopwright.skills.scan.report import ScanReport, add_finding, show, show_size
from loopwright.skills.scan.text import FileScan


class _Bomb(Exception):
    def __init__(self, kind: str, message: str, owner: object = None):
        super().__init__(message)
        self.kind, self.message, self.owner = kind, message, owner


class _Budget:
    """The uncompressed bytes one top-level archive may produce, nested archives included."""

    def __init__(self, limit: int = limits.MAX_TOTAL_UNCOMPRESSED):
        self.limit, self.used, self.reported = limit, 0, False

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise _Bomb("budget", f"expands past {show_size(self.limit)} uncompressed (while reading {where}); "
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
            while chunk := self.read(limits.CHUNK_BYTES):
                parts.append(chunk)
            return b"".join(parts)
        data = self.src.read(n)
        if data:
            self.count += len(data)
            self.budget.take(len(data), self.where)
            raw = self.raw
            if (raw is not None and self.count >= limits.RATIO_MIN_BYTES
                    and self.count > limits.MAX_RATIO * max(raw.count, 1)):
                raise _Bomb("ratio", f"expands more than {limits.MAX_RATIO}× ({show_size(self.count)} from "
                                     f"{show_size(self.raw.count)} so far); not read further", owner=self)
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
        add_finding(report, label, "high", "symlink-escape", f"{kind} points outside the pack: -> {show(target, 60)}")
    else:
        add_finding(report, label, "low", "archive-link", f"{kind} inside the archive: -> {show(target, 60)}")


def _scan_member(report: ScanReport, reader, label: str, name: str, level: int, budget: _Budget) -> None:
    """One archive member (at `level` archives deep), streamed: a nested archive or a file."""
    report.files_scanned += 1
    head = read_head(reader)
    kind = archive_kind(head)
    if kind and kind.startswith("unsupported:"):
        add_finding(report, label, "medium", "unscanned",
                    f"{kind.split(':')[1]} archive: this format cannot be inspected")
        return
    if kind:
        if level > 1:
            add_finding(report, label, "high", "unscanned", "archive nested more than one level deep; not scanned")
            return
        _open_archive(report, kind, _Chain(head, reader), label, level, budget, seekable=False)
        return
    scan = FileScan(report, label, name)
    try:
        scan.feed(head)
        while chunk := reader.read(limits.CHUNK_BYTES):
            scan.feed(chunk)
    finally:
        scan.close()


def _open_archive(report: ScanReport, kind: str, f, label: str, level: int, budget: _Budget, seekable: bool) -> None:
    """An archive at `level` (0: a file on disk); its members are at level + 1."""
    try:
        if kind == "zip":
            if not seekable:
                data = read_head(f, limits.MAX_NESTED_ZIP_BYTES + 1)
                if len(data) > limits.MAX_NESTED_ZIP_BYTES:
                    add_finding(report, label, "medium", "unscanned",
                                f"nested zip larger than {show_size(limits.MAX_NESTED_ZIP_BYTES)}; not scanned")
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
                head = read_head(out, 512)
                if is_tar_header(head):
                    _scan_tar(report, _Chain(head, out), label, level, budget)
                else:
                    base = posixpath.basename(label.rsplit("!", 1)[-1])
                    inner = re.sub(r"\.(?:gz|tgz|gzip|bz2|xz)$", "", base, flags=re.I) or "data"
                    _scan_member(report, _Chain(head, out), f"{label}!{inner}", inner, level + 1, budget)
            except _Bomb as bomb:
                if bomb.owner is not out:
                    raise
                add_finding(report, label, "high", "archive-bomb", f"compressed stream {bomb.message}")
    except _Bomb:
        raise
    except Exception as exc:   # malformed input is a finding, never a crash
        add_finding(report, label, "medium", "unscanned", f"corrupt or unreadable archive ({type(exc).__name__}: "
                                                          f"{show(str(exc), 60)}); the rest was not scanned")


def _scan_zip(report: ScanReport, zf: zipfile.ZipFile, label: str, level: int, budget: _Budget) -> None:
    infos = zf.infolist()
    if len(infos) > limits.MAX_MEMBERS:
        add_finding(report, label, "high", "archive-bomb", f"{len(infos):,} members (limit {limits.MAX_MEMBERS:,}); "
                                                           f"only the first {limits.MAX_MEMBERS:,} were scanned")
        infos = infos[:limits.MAX_MEMBERS]
    declared = sum(i.file_size for i in infos)
    over = declared > budget.remaining
    if over:
        add_finding(report, label, "high", "archive-bomb",
                    f"declares {show_size(declared)} uncompressed (limit {show_size(limits.MAX_TOTAL_UNCOMPRESSED)}); "
                    "members past the limit were not read")
    for info in infos:
        name = info.filename
        mlabel = f"{label}!{name}"
        if _escapes(name):
            add_finding(report, mlabel, "high", "archive-path-escape",
                        f"member path leaves the extraction folder: {show(name, 60)}")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            with zf.open(info) as fh:
                target = fh.read(4097)
            _judge_link(report, mlabel, name, target[:4096].decode("utf-8", "replace"), hard=False)
            continue
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            add_finding(report, mlabel, "high", "unscanned", "encrypted member; its content cannot be checked")
            continue
        if info.file_size >= limits.RATIO_MIN_BYTES and info.file_size > limits.MAX_RATIO * max(info.compress_size, 1):
            add_finding(report, mlabel, "high", "archive-bomb",
                        f"expands {info.file_size // max(info.compress_size, 1):,}× "
                        f"({show_size(info.compress_size)} to {show_size(info.file_size)}); not read")
            continue
        if info.file_size > budget.remaining:
            if not over:
                add_finding(report, mlabel, "high", "archive-bomb",
                            f"{show_size(info.file_size)} uncompressed is past the archive's limit of "
                            f"{show_size(limits.MAX_TOTAL_UNCOMPRESSED)}; not read")
            continue
        try:
            with zf.open(info) as fh:
                _scan_member(report, _Counted(fh, budget, mlabel), mlabel, name, level + 1, budget)
        except _Bomb:
            raise
        except Exception as exc:
            add_finding(report, mlabel, "medium", "unscanned",
                        f"member could not be read ({type(exc).__name__}: {show(str(exc), 60)})")


def _scan_tar(report: ScanReport, src, label: str, level: int, budget: _Budget) -> None:
    with tarfile.open(fileobj=src, mode="r|") as tf:
        count = 0
        for m in tf:
            count += 1
            if count > limits.MAX_MEMBERS:
                add_finding(report, label, "high", "archive-bomb",
                            f"more than {limits.MAX_MEMBERS:,} members; the rest was not read")
                return
            mlabel = f"{label}!{m.name}"
            if _escapes(m.name):
                add_finding(report, mlabel, "high", "archive-path-escape",
                            f"member path leaves the extraction folder: {show(m.name, 60)}")
            if m.issym() or m.islnk():
                _judge_link(report, mlabel, m.name, m.linkname, hard=m.islnk())
                continue
            if m.ischr() or m.isblk() or m.isfifo():
                add_finding(report, mlabel, "medium", "special-file", "device or FIFO member; not read")
                continue
            if not m.isfile():
                continue
            if m.size > budget.remaining:
                raise _Bomb("budget", f"member {m.name} declares {show_size(m.size)} uncompressed, past the limit of "
                                      f"{show_size(limits.MAX_TOTAL_UNCOMPRESSED)}; the rest was not read")
            fh = tf.extractfile(m)
            if fh is not None:
                _scan_member(report, fh, mlabel, m.name, level + 1, budget)


def scan_archive_file(report: ScanReport, kind: str, f, label: str) -> None:
    """An archive on disk: its own allowance of uncompressed bytes; a bomb stops it."""
    budget = _Budget()
    try:
        _open_archive(report, kind, f, label, 0, budget, seekable=True)
    except _Bomb as bomb:
        add_finding(report, label, "high", "archive-bomb", bomb.message)


def scan_archive(path: Path) -> ScanReport:
    """A .zip, .tar, .tar.gz/.tgz (or .tar.bz2/.tar.xz) pack, read without extracting anything to disk."""
    path = Path(path)
    report = ScanReport([], 0, 0)
    with open(path, "rb") as f:
        head = read_head(f)
        kind = archive_kind(head)
        if kind is None or kind.startswith("unsupported:"):
            raise ValueError(f"{path.name}: not a zip or tar archive")
        report.files_scanned += 1
        report.bytes_scanned += os.fstat(f.fileno()).st_size
        f.seek(0)
        scan_archive_file(report, kind, f, path.name)
    return report

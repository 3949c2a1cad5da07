"""A pack's folder on disk: every file read whole, symlinks judged and never followed, special files not opened,
archives looked into."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from loopwright.skills.scan import limits
from loopwright.skills.scan.archives import scan_archive_file
from loopwright.skills.scan.filetypes import archive_kind, read_head
from loopwright.skills.scan.report import ScanReport, add_finding, show
from loopwright.skills.scan.text import FileScan


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
        add_finding(report, rel(exc.filename) if exc.filename else ".", "medium", "unscanned",
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
        add_finding(report, label, "medium", "unscanned", f"symlink could not be read ({exc.strerror or exc})")
        return
    resolved = os.path.realpath(path)
    if resolved != real_root and not resolved.startswith(real_root.rstrip(os.sep) + os.sep):
        add_finding(report, label, "high", "symlink-escape", f"symlink points outside the pack: -> {show(target, 60)}")


def _scan_path(report: ScanReport, path: str, label: str, real_root: str) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        add_finding(report, label, "medium", "unscanned", f"file could not be read ({exc.strerror or exc})")
        return
    if stat.S_ISLNK(st.st_mode):
        _judge_symlink(report, path, label, real_root)
        return
    if not stat.S_ISREG(st.st_mode):
        add_finding(report, label, "medium", "special-file", "device, FIFO or socket in the pack; not read")
        return
    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        add_finding(report, label, "medium", "unscanned", f"file could not be read ({exc.strerror or exc})")
        return
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):     # swapped since lstat
            add_finding(report, label, "medium", "special-file", "not a regular file; not read")
            return
        report.files_scanned += 1
        try:
            head = read_head(f)
            kind = archive_kind(head)
            if kind and kind.startswith("unsupported:"):
                report.bytes_scanned += st.st_size
                add_finding(report, label, "medium", "unscanned",
                            f"{kind.split(':')[1]} archive: this format cannot be inspected")
                return
            if kind:
                report.bytes_scanned += st.st_size
                f.seek(0)
                scan_archive_file(report, kind, f, label)
                return
            scan = FileScan(report, label, label)
            try:
                scan.feed(head)
                while chunk := f.read(limits.CHUNK_BYTES):
                    scan.feed(chunk)
            finally:
                scan.close()
        except OSError as exc:
            add_finding(report, label, "medium", "unscanned", f"file could not be read ({exc.strerror or exc})")

"""File types from magic bytes: executables, media (images, fonts, PDFs), archives; code files by name."""

from __future__ import annotations

import posixpath
import tarfile

from loopwright.skills.scan import limits
from loopwright.skills.scan.report import Severity

_CODE_EXTS = frozenset(
    ".py .pyw .sh .bash .zsh .ksh .fish .csh .js .mjs .cjs .ts .mts .cts .jsx .tsx .rb .pl .pm .php .ps1 .psm1 .psd1"
    " .bat .cmd .go .rs .lua .java .kt .kts .swift .c .h .cc .cpp .cxx .hpp .cs .r .jl .scala .groovy .vbs .vba"
    " .applescript .awk .sed .tcl .ipynb .nu .elv .vim .el .ex .exs .dart .m .mm".split())
_CODE_NAMES = frozenset("makefile gnumakefile dockerfile containerfile justfile rakefile vagrantfile".split())
MARKDOWN_EXTS = (".md", ".markdown", ".mdx", ".mdc")


def is_code(name: str) -> bool:
    base = posixpath.basename(name.replace("\\", "/")).lower()
    return posixpath.splitext(base)[1] in _CODE_EXTS or base in _CODE_NAMES


def executable_kind(head: bytes) -> tuple[Severity, str] | None:
    if head[:4] == b"\x7fELF":
        return "high", "ELF executable"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"):
        return "high", "Mach-O executable"
    if head[:4] == b"\xca\xfe\xba\xbe" and len(head) >= 8 and 0 < int.from_bytes(head[4:8], "big") < 30:
        return "high", "Mach-O universal executable"          # (a Java class file has a version >= 45 here)
    if head[:2] == b"MZ" and b"\0" in head[:limits.HEAD_BYTES]:
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


def media_type(data: bytes, strong: bool = False) -> str | None:
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


def archive_kind(head: bytes) -> str | None:
    """'zip', 'tar', 'gz', 'bz2', 'xz', 'unsupported:<name>' or None, from magic bytes."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gz"
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if is_tar_header(head):
        return "tar"
    for magic, name in _UNSUPPORTED_ARCHIVES:
        if head.startswith(magic):
            return f"unsupported:{name}"
    return None


def is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")   # old v7 tar: a valid header checksum
        return True
    except Exception:
        return False


def read_head(reader, n: int = limits.HEAD_BYTES) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = reader.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)

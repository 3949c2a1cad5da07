#!/usr/bin/env python3
"""Check an experiment folder: layout, CSV files, PNG files and the four sections of report.md.

Prints one line per problem (`path[:line]: what is wrong`) and exits 1, or prints one `ok:` line
and exits 0. Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from datetime import datetime
from pathlib import Path

NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{4})_([a-z0-9]+(?:[-_][a-z0-9]+)*)$")
SCRIPT_SUFFIXES = {".py", ".sh", ".r", ".jl"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("What was observed", "What is concluded", "What is still unknown", "What to try next")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
PLACEHOLDER = re.compile(r"^(?:(?:todo|tbd|tba)\b[^\n]*|n/?a|-+|\.+|…)$", re.IGNORECASE)  # one line of filler
REFERENCE = re.compile(r"(?<![\w/.-])((?:data|figures)/[\w.-]+\.(?:csv|png))")


def check(folder: Path) -> tuple[list[str], str]:
    """The problems found in one experiment folder, and a one-line summary for when there are none."""
    shown = folder.as_posix().rstrip("/")
    if not folder.is_dir():
        return [f"{shown}: not a folder"], ""
    problems: list[str] = []
    m = NAME.match(folder.resolve().name)
    if not m:
        problems.append(f"{shown}: folder name should be YYYY-MM-DD_HHMM_<slug> (lowercase slug), "
                        f"e.g. 2025-01-31_2359_cache-size")
    else:
        try:
            datetime.strptime(m.group(1), "%Y-%m-%d_%H%M")
        except ValueError:
            problems.append(f"{shown}: {m.group(1)} in the folder name is not a real date and time")

    scripts = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SCRIPT_SUFFIXES)
    if not scripts:
        problems.append(f"{shown}: no script (run.py) that produces data/ and figures/")
    elif len(scripts) > 1:
        problems.append(f"{shown}: {len(scripts)} scripts ({', '.join(scripts)}); keep one script per experiment")

    csvs: list[Path] = []
    data = folder / "data"
    if not data.is_dir():
        problems.append(f"{shown}/data: missing (run the script; it writes its CSV files there)")
    else:
        csvs = sorted(data.rglob("*.csv"))
        if not csvs:
            problems.append(f"{shown}/data: no CSV files (run the script)")
        for path in csvs:
            problems += check_csv(path, path.relative_to(folder).as_posix(), shown)

    pngs: list[Path] = []
    figures = folder / "figures"
    report_path = folder / "report.md"
    report = read_text(report_path)
    if not figures.is_dir():
        problems.append(f"{shown}/figures: missing (the script writes its PNG files there)")
    else:
        pngs = sorted(p for p in figures.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
        for path in pngs:
            with path.open("rb") as f:
                if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                    problems.append(f"{shown}/{path.relative_to(folder).as_posix()}: not a PNG file "
                                    f"(wrong signature); save figures with savefig(..., format='png')")
        if not pngs and "no figures" not in (report or "").lower():
            problems.append(f"{shown}/figures: no PNG files; draw one, or say in report.md why there are "
                            f"no figures")

    if report is None:
        problems.append(f"{shown}/report.md: missing (sections: {', '.join(SECTIONS)})")
    else:
        problems += check_report(report, f"{shown}/report.md", folder)
    summary = (f"ok: {shown} ({len(scripts)} script, {len(csvs)} CSV, {len(pngs)} PNG, "
               f"report.md has all {len(SECTIONS)} sections)")
    return problems, summary


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def check_csv(path: Path, rel: str, shown: str) -> list[str]:
    where = f"{shown}/{rel}"
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = None
            rows = 0
            ragged: list[tuple[int, int]] = []
            for record in reader:
                if not record or all(not cell.strip() for cell in record) and len(record) <= 1:
                    continue  # blank lines: pandas skips them too
                if header is None:
                    header = record
                    continue
                rows += 1
                if len(record) != len(header):
                    ragged.append((reader.line_num, len(record)))
    except UnicodeDecodeError:
        return [f"{where}: not UTF-8 text"]
    except csv.Error as e:
        return [f"{where}:{reader.line_num}: cannot parse: {e}"]
    except OSError as e:
        return [f"{where}: cannot read: {e.strerror or e}"]
    if header is None:
        return [f"{where}: empty (no header row)"]
    problems = []
    names = [h.strip() for h in header]
    if any(not n for n in names):
        problems.append(f"{where}:1: header has an empty column name")
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        problems.append(f"{where}:1: header repeats column name(s): {', '.join(dupes)}")
    if rows == 0:
        problems.append(f"{where}: header but no data rows")
    if ragged:
        line, n = ragged[0]
        more = f" (and {len(ragged) - 1} more ragged rows)" if len(ragged) > 1 else ""
        problems.append(f"{where}:{line}: row has {n} fields but the header has {len(header)}{more}")
    return problems


def sections(text: str) -> dict[str, tuple[int, str]]:
    """Heading text (lowercase) -> (line number, body up to the next heading of the same or a higher level)."""
    lines = text.splitlines()
    heads = []
    in_fence = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else HEADING.match(line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2).strip().lower()))
    found: dict[str, tuple[int, str]] = {}
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
        found.setdefault(title, (i + 1, "\n".join(lines[i + 1:end])))
    return found


def check_report(text: str, where: str, folder: Path) -> list[str]:
    problems = []
    found = sections(text)
    for name in SECTIONS:
        key = name.lower()
        hit = next(((t, v) for t, v in found.items() if t == key or t.startswith((key + " ", key + ":"))), None)
        if hit is None:
            problems.append(f"{where}: missing section '## {name}'")
            continue
        line, body = hit[1]
        content = COMMENT.sub("", body).strip()
        if not content or PLACEHOLDER.match(content):
            problems.append(f"{where}:{line}: section '{name}' is empty; write it (see the comment under it)")
    for ref in sorted(set(REFERENCE.findall(COMMENT.sub("", text)))):
        if not (folder / ref).is_file():
            problems.append(f"{where}: refers to {ref}, which does not exist")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Check experiment folders: name YYYY-MM-DD_HHMM_<slug>, one script, data/*.csv that parse "
                    "with one consistent header, figures/*.png with the PNG signature, and report.md with the "
                    "sections " + ", ".join(f"'{s}'" for s in SECTIONS) + " filled in.",
        epilog="Exit 0: every folder is fine. Exit 1: one line per problem was printed.")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="experiment folder(s) to check")
    args = p.parse_args(argv)
    failed = False
    for name in args.folders:
        problems, summary = check(Path(name))
        for line in problems:
            print(line)
        if problems:
            failed = True
        else:
            print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

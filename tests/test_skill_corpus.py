"""The scanner against a labelled corpus (tests/skill_corpus.py): at least 90% of the malicious skills are refused
(a high finding, of the skill's own category), per category as the README's table says; none of the skills shaped
like Anthropic's 17 has a high finding."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from skill_corpus import BENIGN, MALICIOUS, write

from loopwright.skills.scan.tree import scan_tree

README = Path(__file__).resolve().parent.parent / "README.md"
ANTHROPIC_17 = {"algorithmic-art", "brand-guidelines", "canvas-design", "claude-api", "doc-coauthoring", "docx",
                "frontend-design", "internal-comms", "mcp-builder", "pdf", "pptx", "skill-creator",
                "slack-gif-creator", "theme-factory", "web-artifacts-builder", "webapp-testing", "xlsx"}


def detection_table(results: list[tuple[str, bool]]) -> str:
    total, caught = Counter(), Counter()
    for category, hit in results:
        total[category] += 1
        caught[category] += hit
    rows = ["| Category | Refused (high) |", "|---|---|"]
    rows += [f"| {c} | {caught[c]}/{total[c]} |" for c in total]
    n, k = sum(total.values()), sum(caught.values())
    rows.append(f"| **total** | {k}/{n} ({100 * k // n}%) |")
    return "\n".join(rows)


def test_the_malicious_corpus_is_refused(tmp_path, capsys):
    assert len(MALICIOUS) >= 100 and len({c for c, _, _ in MALICIOUS}) == 15
    results, missed = [], []
    for category, name, files in MALICIOUS:
        report = scan_tree(write(tmp_path / name, files))
        own = [f for f in report.blocking if f.category == category]
        results.append((category, bool(own)))
        if not own:
            missed.append(f"{category}: {name}: {[str(f) for f in report.findings]}")
        for f in report.findings:           # each says where, how bad, what kind and why
            assert f.path in files and f.severity in ("low", "medium", "high") and f.category and f.message
    table = detection_table(results)
    with capsys.disabled():
        print("\n" + table + "\nmissed:\n" + "\n".join(missed))
    caught = sum(hit for _, hit in results)
    assert caught >= 0.9 * len(results), missed
    assert table in README.read_text(), "update the table in the README's Skills section"


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_skills_shaped_like_anthropics_have_no_high_finding(tmp_path, name):
    report = scan_tree(write(tmp_path / name, BENIGN[name]))
    assert report.blocking == []
    assert [f for f in report.findings if f.severity == "medium"] == []


def test_the_benign_corpus_is_anthropics_17():
    assert set(BENIGN) == ANTHROPIC_17
    assert all(files["SKILL.md"].startswith(f"---\nname: {name}\n") for name, files in BENIGN.items())


def test_installing_a_skill_that_leaks_prompts_is_refused_with_its_category(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    [(_, _, files)] = [m for m in MALICIOUS if m[1] == "ssh-doctor"]
    write(tmp_path / "pack" / "ssh-doctor", files)
    code, out, err = cli(tmp_path, "skills", "install", tmp_path / "pack")
    assert code != 0 and "--allow-risky" in err and len(err.strip().splitlines()) == 1
    assert "high: pack/ssh-doctor/SKILL.md:8: tells the agent to read a credentials file" in out
    assert "[secret-exfiltration] (credential theft)" in out
    code, out, _ = cli(tmp_path, "skills", "install", tmp_path / "pack", "--json")
    found = json.loads(out)["findings"]
    assert [(f["path"], f["line"], f["severity"], f["category"]) for f in found] == [
        ("pack/ssh-doctor/SKILL.md", 8, "high", "credential theft")]
    assert not (tmp_path / "home" / "skills").exists() or not any((tmp_path / "home" / "skills").iterdir())

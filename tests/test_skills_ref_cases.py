"""The test cases of skills-ref (the Agent Skills reference validator, agentskills/agentskills), recreated as folders.

Each case is a skill folder and skills-ref's verdict on it (valid or not); `loopwright skills validate --strict`
must agree on every one, and the lenient loader must load every skill skills-ref accepts. Written from the cases'
descriptions, not copied code. A case with `None` files is a path that does not exist; a `str` is a plain file.
"""

from __future__ import annotations

import json
import unicodedata

import pytest

from loopwright.cli.main import main
from loopwright.skills.format import is_valid, load_skill, validate_skill


def _md(front: str, body: str = "Body\n") -> str:
    return f"---\n{front.strip()}\n---\n{body}"


OK = _md("name: my-skill\ndescription: A test skill")
# (case, folder name, files, skills-ref accepts it, a fragment of loopwright's error when it does not)
CASES = [
    ("valid skill", "my-skill", {"SKILL.md": OK}, True, ""),
    ("nonexistent path", "nonexistent", None, False, "does not exist"),
    ("not a directory", "file.txt", "test", False, "is not a folder"),
    ("missing SKILL.md", "my-skill", {}, False, "no SKILL.md"),
    ("upper-case name", "MySkill", {"SKILL.md": _md("name: MySkill\ndescription: A test skill")}, False,
     "lowercase"),
    ("name over 64 characters", "a" * 70, {"SKILL.md": _md(f"name: {'a' * 70}\ndescription: A test skill")}, False,
     "the limit is 64"),
    ("leading hyphen", "-my-skill", {"SKILL.md": _md("name: -my-skill\ndescription: A test skill")}, False,
     "start or end with '-'"),
    ("consecutive hyphens", "my--skill", {"SKILL.md": _md("name: my--skill\ndescription: A test skill")}, False,
     "'--'"),
    ("underscore in name", "my_skill", {"SKILL.md": _md("name: my_skill\ndescription: A test skill")}, False,
     "letters, digits and '-'"),
    ("name and folder differ", "wrong-name", {"SKILL.md": _md("name: correct-name\ndescription: A test skill")},
     False, "must match its folder"),
    ("unknown field", "my-skill", {"SKILL.md": _md("name: my-skill\ndescription: A test skill\n"
                                                   "unknown_field: should not be here")}, False, "unknown front"),
    ("every field", "my-skill", {"SKILL.md": _md("name: my-skill\ndescription: A test skill\nlicense: MIT\n"
                                                 "metadata:\n  author: Test")}, True, ""),
    ("allowed-tools", "my-skill", {"SKILL.md": _md("name: my-skill\ndescription: A test skill\n"
                                                   "allowed-tools: Bash(jq:*) Bash(git:*)")}, True, ""),
    ("Chinese name", "技能", {"SKILL.md": _md("name: 技能\ndescription: A skill with Chinese name")}, True, ""),
    ("Russian name with hyphens", "мой-навык",
     {"SKILL.md": _md("name: мой-навык\ndescription: A skill with Russian name")}, True, ""),
    ("Russian lower-case name", "навык", {"SKILL.md": _md("name: навык\ndescription: Russian lowercase")}, True, ""),
    ("Russian upper-case name", "НАВЫК", {"SKILL.md": _md("name: НАВЫК\ndescription: Russian uppercase")}, False,
     "lowercase"),
    ("description over 1024 characters", "my-skill", {"SKILL.md": _md(f"name: my-skill\ndescription: {'x' * 1100}")},
     False, "limit is 1024"),
    ("compatibility", "my-skill", {"SKILL.md": _md("name: my-skill\ndescription: A test skill\n"
                                                   "compatibility: Requires Python 3.11+")}, True, ""),
    ("compatibility over 500 characters", "my-skill",
     {"SKILL.md": _md(f"name: my-skill\ndescription: A test skill\ncompatibility: {'x' * 550}")}, False,
     "the limit is 500"),
    ("decomposed café, composed folder", "café", {"SKILL.md": _md("name: cafe\u0301\ndescription: A test skill")},
     True, ""),
    ("body after front matter", "my-skill", {"SKILL.md": _md("name: my-skill\ndescription: A test skill",
                                                             "# My Skill\n\nInstructions here.\n")}, True, ""),
    ("no front matter", "my-skill", {"SKILL.md": "# No frontmatter here"}, False, "no YAML front matter"),
    ("front matter not closed", "my-skill", {"SKILL.md": "---\nname: my-skill\ndescription: A test skill\n"}, False,
     "not closed"),
    ("invalid YAML", "my-skill", {"SKILL.md": _md("name: [invalid\ndescription: broken")}, False, "YAML"),
    ("front matter is a list", "my-skill", {"SKILL.md": _md("- just\n- a\n- list")}, False, "mapping"),
    ("license", "my-skill", {"SKILL.md": _md("name: my-skill\ndescription: A test skill\nlicense: MIT",
                                             "# My Skill\n")}, True, ""),
    ("metadata with an unquoted number", "my-skill",
     {"SKILL.md": _md("name: my-skill\ndescription: A test skill\nmetadata:\n  author: Test Author\n"
                      "  version: 1.0")}, True, ""),
    ("no name", "my-skill", {"SKILL.md": _md("description: A test skill")}, False, "missing required field: name"),
    ("no description", "my-skill", {"SKILL.md": _md("name: my-skill")}, False,
     "missing required field: description"),
    ("SKILL.md preferred over skill.md", "my-skill", {"SKILL.md": OK, "skill.md": "lowercase"}, True, ""),
    ("only a lower-case skill.md", "my-skill", {"skill.md": OK}, True, ""),
    ("lower-case skill.md with a heading", "my-skill",
     {"skill.md": _md("name: my-skill\ndescription: A test skill", "# My Skill\n")}, True, ""),
    ("allowed-tools kept as written", "my-skill",
     {"SKILL.md": _md("name: my-skill\ndescription: A test skill\nallowed-tools: Bash(jq:*) Bash(git:*)")}, True, ""),
]


def _make(tmp_path, folder: str, files):
    path = tmp_path / folder
    if isinstance(files, str):
        path.write_text(files)
    elif files is not None:
        path.mkdir()
        for name, text in files.items():
            (path / name).write_text(text)
    return path


def test_the_suite_has_every_case_of_skills_ref():
    assert len(CASES) == 34 and len({c[0] for c in CASES}) == 34


@pytest.mark.parametrize("case,folder,files,valid,why", CASES, ids=[c[0] for c in CASES])
def test_strict_validation_agrees_with_skills_ref(tmp_path, case, folder, files, valid, why):
    path = _make(tmp_path, folder, files)
    diagnostics = validate_skill(path, strict=True)
    errors = [d.message for d in diagnostics if d.level == "error"]
    assert is_valid(diagnostics) == valid, errors
    if not valid:
        assert any(why in e for e in errors), errors
    else:
        skill, _ = load_skill(path)
        assert skill is not None and skill.name == unicodedata.normalize("NFKC", folder)


def test_unquoted_metadata_numbers_load_as_text(tmp_path):
    path = _make(tmp_path, "my-skill", dict(CASES[27][2]))
    skill, _ = load_skill(path)
    assert skill is not None and skill.metadata == {"author": "Test Author", "version": "1.0"}


def test_a_long_description_is_a_warning_unless_strict(tmp_path, capsys):
    long = "Use it for everything. " * 47  # 1,081 characters, like Anthropic's claude-api skill
    path = _make(tmp_path, "claude-api", {"SKILL.md": _md(f"name: claude-api\ndescription: {long.strip()}")})
    lenient = validate_skill(path)
    assert is_valid(lenient) and any("loaded anyway" in d.message for d in lenient)
    assert main(["skills", "validate", str(path), "--json"]) == 0
    capsys.readouterr()
    assert main(["skills", "validate", str(path), "--strict", "--json"]) == 1
    (messages,) = json.loads(capsys.readouterr().out).values()
    assert [m["level"] for m in messages if "limit is 1024" in m["message"]] == ["error"]

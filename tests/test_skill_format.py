"""The Agent Skills format (skills/format.py): lenient loading for the catalog, strict validation for authors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from loopwright.skills import format as fmt
from loopwright.skills.format import (
    MAX_SKILL_BYTES,
    SKILL_FILE,
    Diagnostic,
    Skill,
    is_valid,
    load_skill,
    validate_skill,
)

BODY = "# Title\n\nDo the thing, step by step.\n"


def make_skill(root: Path, folder: str, front: str | None, body: str = BODY) -> Path:
    """A skill folder `root/folder` whose SKILL.md has `front` between '---' lines (no front matter if None)."""
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    text = body if front is None else f"---\n{front.strip(chr(10))}\n---\n{body}"
    (path / SKILL_FILE).write_text(text, encoding="utf-8")
    return path


def errors(diags: list[Diagnostic]) -> list[str]:
    return [d.message for d in diags if d.level == "error"]


def warnings(diags: list[Diagnostic]) -> list[str]:
    return [d.message for d in diags if d.level == "warning"]


# -- strict validation: the specification's rules, as a table ------------------------------------------

DESC = "description: Extract PDF text, fill forms, merge files. Use when handling PDFs."
NAME64 = "a" * 64
NAME65 = "a" * 65

SPEC_CASES = [
    # valid examples from the specification
    ("name: skill-name\ndescription: A description of what this skill does and when to use it.", "skill-name", None),
    (f"name: pdf-processing\n{DESC}\nlicense: Apache-2.0\nmetadata:\n  author: example-org\n  version: \"1.0\"",
     "pdf-processing", None),
    (f"name: data-analysis\n{DESC}", "data-analysis", None),
    (f"name: code-review\n{DESC}", "code-review", None),
    (f"name: pdf\n{DESC}\nlicense: Proprietary. LICENSE.txt has complete terms", "pdf", None),
    (f"name: pdf\n{DESC}\ncompatibility: Requires git, docker, jq, and access to the internet", "pdf", None),
    (f"name: pdf\n{DESC}\nallowed-tools: Bash(git:*) Bash(jq:*) Read", "pdf", None),
    (f"name: pdf\n{DESC}\nallowed-tools:\n  - Bash(git:*)\n  - Bash(jq:*)\n  - Read", "pdf", None),
    (f"name: a1-b2-c3\n{DESC}", "a1-b2-c3", None),
    (f"name: {NAME64}\n{DESC}", NAME64, None),
    (f"name: x\ndescription: {'d' * 1024}", "x", None),
    (f"name: x\n{DESC}\ncompatibility: {'c' * 500}", "x", None),
    ("name: \uff50\uff44\uff46\n" + DESC, "pdf", None),  # full-width letters: NFKC-normalised to 'pdf'
    # name
    (f"name: PDF-Processing\n{DESC}", "PDF-Processing", "must be lowercase"),
    (f"name: -pdf\n{DESC}", "-pdf", "must not start or end with '-'"),
    (f"name: pdf-\n{DESC}", "pdf-", "must not start or end with '-'"),
    (f"name: pdf--processing\n{DESC}", "pdf--processing", "must not contain '--'"),
    (f"name: pdf_processing\n{DESC}", "pdf_processing", "may only use letters, digits and '-'"),
    (f"name: pdf processing\n{DESC}", "pdf processing", "may only use letters, digits and '-'"),
    (f"name: caf\u00e9\n{DESC}", "caf\u00e9", None),  # letters of any script, as skills-ref has it
    (f"name: {NAME65}\n{DESC}", NAME65, "65 characters; the limit is 64"),
    (f"name: pdf-processing\n{DESC}", "pdf", "must match its folder name 'pdf'"),
    (DESC, "pdf", "missing required field: name"),
    (f"name: ''\n{DESC}", "pdf", "name must be a non-empty string"),
    (f"name: 123\n{DESC}", "123", None),  # unquoted scalars are text, as in skills-ref
    # description
    ("name: pdf", "pdf", "missing required field: description"),
    ("name: pdf\ndescription: ''", "pdf", "description must be a non-empty string"),
    ("name: pdf\ndescription:", "pdf", "description must be a non-empty string, not a null"),
    ("name: pdf\ndescription: [a, b]", "pdf", "description must be a non-empty string, not a list"),
    (f"name: x\ndescription: {'d' * 1025}", "x", "1025 characters; the limit is 1024"),
    # compatibility
    (f"name: x\n{DESC}\ncompatibility: {'c' * 501}", "x", "compatibility is 501 characters; the limit is 500"),
    (f"name: x\n{DESC}\ncompatibility: ''", "x", "compatibility must be a non-empty string"),
    (f"name: x\n{DESC}\ncompatibility: [a]", "x", "compatibility must be a non-empty string, not a list"),
    # license
    (f"name: x\n{DESC}\nlicense: [MIT, Apache-2.0]", "x", "license must be a string"),
    # metadata: string to string
    (f"name: x\n{DESC}\nmetadata: just text", "x", "metadata must be a mapping"),
    (f"name: x\n{DESC}\nmetadata:\n  version: 1.0", "x", None),
    (f"name: x\n{DESC}\nmetadata:\n  tags: [a, b]", "x", "metadata must map strings to strings"),
    (f"name: x\n{DESC}\nmetadata:\n  1: one", "x", None),
    # allowed-tools
    (f"name: x\n{DESC}\nallowed-tools: 5", "x", None),
    (f"name: x\n{DESC}\nallowed-tools: {{a: b}}", "x", "allowed-tools must be a space-separated string or a list"),
    (f"name: x\n{DESC}\nallowed-tools:\n  - Read\n  - {{a: b}}", "x", "allowed-tools list items must all be strings"),
    # only the allowed keys
    (f"name: x\n{DESC}\nversion: 1", "x", "unknown front matter key(s): version"),
    (f"name: x\n{DESC}\ndisable-model-invocation: true", "x", "unknown front matter key(s): disable-model-invocation"),
    # the file itself
    ("name: x\ndescription: Use when: the user asks", "x", "unquoted ': '"),
    ("name: x\ndescription: \"never closed", "x", "invalid YAML in the front matter at line 3"),
    ("- name: x\n- description: y", "x", "must be a YAML mapping"),
]


@pytest.mark.parametrize("front, folder, expected", SPEC_CASES,
                         ids=[f"{i}-{(e or 'valid')[:30]}" for i, (_, _, e) in enumerate(SPEC_CASES)])
def test_strict_validation_follows_the_specification(tmp_path, front, folder, expected):
    diags = validate_skill(make_skill(tmp_path, folder, front), strict=True)
    if expected is None:
        assert is_valid(diags), diags
        assert errors(diags) == []
    else:
        assert not is_valid(diags)
        assert any(expected in m for m in errors(diags)), errors(diags)


def test_strict_validation_of_missing_or_broken_files(tmp_path):
    assert "does not exist" in errors(validate_skill(tmp_path / "nope"))[0]
    (tmp_path / "empty").mkdir()
    assert f"no {SKILL_FILE} here" in errors(validate_skill(tmp_path / "empty"))[0]
    assert "no YAML front matter" in errors(validate_skill(make_skill(tmp_path, "plain", None)))[0]
    folder = tmp_path / "unclosed"
    folder.mkdir()
    (folder / SKILL_FILE).write_text("---\nname: unclosed\ndescription: x\n# Title\n")
    assert "not closed" in errors(validate_skill(folder))[0]


def test_capitals_or_double_hyphens_load_leniently_but_are_invalid_strictly(tmp_path):
    for name in ("My-Skill", "my--skill"):
        folder = make_skill(tmp_path, name, f"name: {name}\n{DESC}")
        skill, diags = load_skill(folder)
        assert skill is not None and skill.name == name
        assert warnings(diags) and not errors(diags)
        assert not is_valid(validate_skill(folder))


def test_diagnostic_reads_as_one_line():
    d = Diagnostic("warning", "/skills/x/SKILL.md", "name 'y' does not match its folder 'x'")
    assert str(d) == "warning: /skills/x/SKILL.md: name 'y' does not match its folder 'x'"
    assert is_valid([d]) and not is_valid([d, Diagnostic("error", "p", "m")]) and is_valid([])


# -- lenient loading -----------------------------------------------------------------------------------


def test_a_valid_skill_loads_every_field(tmp_path):
    folder = make_skill(tmp_path, "pdf-processing", f"""
name: pdf-processing
{DESC}
license: Apache-2.0
compatibility: Requires Python 3.14+ and uv
metadata:
  author: example-org
  version: "1.0"
allowed-tools: Bash(git:*) Bash(jq:*) Read
""")
    skill, diags = load_skill(folder)
    assert diags == []
    assert skill.name == "pdf-processing" and skill.path == folder
    assert skill.description == "Extract PDF text, fill forms, merge files. Use when handling PDFs."
    assert skill.license == "Apache-2.0" and skill.compatibility == "Requires Python 3.14+ and uv"
    assert skill.metadata == {"author": "example-org", "version": "1.0"}
    assert skill.allowed_tools == ["Bash(git:*)", "Bash(jq:*)", "Read"]
    st = (folder / SKILL_FILE).stat()
    assert (skill.mtime_ns, skill.size) == (st.st_mtime_ns, st.st_size)


def test_optional_fields_default_when_absent(tmp_path):
    skill, diags = load_skill(make_skill(tmp_path, "x", f"name: x\n{DESC}"))
    assert diags == []
    assert (skill.license, skill.compatibility, skill.metadata, skill.allowed_tools) == (None, None, {}, None)


@pytest.mark.parametrize("value, expected", [
    ("allowed-tools: Bash(git:*) Bash(jq:*) Read", ["Bash(git:*)", "Bash(jq:*)", "Read"]),
    ("allowed-tools:\n  - Bash(git:*)\n  - Read", ["Bash(git:*)", "Read"]),
    ("allowed-tools: Read, Grep, Bash(git add:*)", ["Read", "Grep", "Bash(git add:*)"]),  # Claude Code style
    ("allowed-tools: ''", []),
])
def test_allowed_tools_is_split_into_tool_patterns(tmp_path, value, expected):
    skill, diags = load_skill(make_skill(tmp_path, "x", f"name: x\n{DESC}\n{value}"))
    assert diags == [] and skill.allowed_tools == expected


def test_a_name_that_does_not_match_its_folder_loads_with_a_warning(tmp_path):
    skill, diags = load_skill(make_skill(tmp_path, "template", f"name: template-skill # lowercase only\n{DESC}"))
    assert skill is not None and skill.name == "template-skill"
    assert len(diags) == 1 and diags[0].level == "warning"
    assert "does not match its folder 'template'" in diags[0].message
    assert diags[0].path == str(tmp_path / "template" / SKILL_FILE)


def test_a_too_long_name_loads_with_a_warning(tmp_path):
    skill, diags = load_skill(make_skill(tmp_path, NAME65, f"name: {NAME65}\n{DESC}"))
    assert skill is not None and skill.name == NAME65
    assert [d.level for d in diags] == ["warning"] and "65 characters" in diags[0].message


def test_a_missing_name_falls_back_to_the_folder_name(tmp_path):
    skill, diags = load_skill(make_skill(tmp_path, "folder-name", DESC))
    assert skill.name == "folder-name"
    assert [d.level for d in diags] == ["warning"] and "no name" in diags[0].message


@pytest.mark.parametrize("front", ["name: x", "name: x\ndescription:", "name: x\ndescription: '   '"])
def test_a_missing_or_empty_description_skips_the_skill(tmp_path, front):
    skill, diags = load_skill(make_skill(tmp_path, "x", front))
    assert skill is None
    assert [d.level for d in diags] == ["error"] and "no description" in diags[0].message


def test_malformed_yaml_skips_the_skill_naming_the_line(tmp_path):
    folder = make_skill(tmp_path, "x", f"name: x\n{DESC}\nmetadata: [unclosed, list")
    skill, diags = load_skill(folder)
    assert skill is None
    assert len(diags) == 1 and diags[0].level == "error"
    assert "invalid YAML in the front matter at line 4" in diags[0].message  # line 1 is the opening ---
    assert "\n" not in diags[0].message


def test_unquoted_colons_are_retried_as_quoted(tmp_path):
    folder = make_skill(tmp_path, "x", """
name: x
description: Use when: the user asks about PDFs, or says "don't" # a comment
  and this line continues it: still the description
metadata:
  author: Jane: Doe
  version: '1.0'
license: MIT
""")
    skill, diags = load_skill(folder)
    assert skill is not None
    assert skill.description == ("Use when: the user asks about PDFs, or says \"don't\" "
                                 "and this line continues it: still the description")
    assert skill.metadata == {"author": "Jane: Doe", "version": "1.0"} and skill.license == "MIT"
    assert [d.level for d in diags] == ["warning"]
    assert "unquoted ': '" in diags[0].message and "lines 3, 6" in diags[0].message


def test_the_colon_retry_quotes_continuation_lines_and_leaves_block_scalars_alone(tmp_path):
    folder = make_skill(tmp_path, "x", """
name: x
description: Use this skill
  when: the user asks
compatibility: |
  Needs: git
  and: jq
license: see: LICENSE.txt
""")
    skill, diags = load_skill(folder)
    assert skill.description == "Use this skill when: the user asks"
    assert skill.compatibility == "Needs: git\nand: jq\n" and skill.license == "see: LICENSE.txt"
    assert [d.level for d in diags] == ["warning"] and "lines 3, 8" in diags[0].message


def test_a_skill_md_that_is_not_a_regular_file_does_not_hang_the_scan(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    os.mkfifo(folder / SKILL_FILE)
    skill, diags = load_skill(folder)
    assert skill is None and "not a regular file" in errors(diags)[0]


def test_a_skill_md_without_front_matter_is_skipped(tmp_path):
    skill, diags = load_skill(make_skill(tmp_path, "x", None, body="# Just markdown\n\nname: x\n"))
    assert skill is None and "no YAML front matter" in errors(diags)[0]
    skill, diags = load_skill(make_skill(tmp_path, "y", None, body="---\nname: y\ndescription: never closed\n"))
    assert skill is None and "not closed" in errors(diags)[0]


def test_a_folder_without_skill_md_is_skipped(tmp_path):
    skill, diags = load_skill(tmp_path)
    assert skill is None and diags[0].path == str(tmp_path) and f"no {SKILL_FILE}" in diags[0].message


def test_windows_line_endings_and_a_byte_order_mark_load(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / SKILL_FILE).write_bytes(b"\xef\xbb\xbf---\r\nname: x\r\ndescription: Does x.\r\n---\r\n# Body\r\n")
    skill, diags = load_skill(folder)
    assert diags == [] and skill.name == "x" and skill.description == "Does x."
    assert skill.body() == "# Body"


@pytest.mark.parametrize("front, loads, message", [
    ("name: x\ndescription: [a, list]", False, "description must be text, not a list"),
    ("name: x\ndescription:\n  what: a mapping", False, "description must be text, not a mapping"),
    ("- name: x", False, "must be a YAML mapping"),
    ("just a string", False, "must be a YAML mapping"),
    (f"name: x\n{DESC}\nmetadata: not a mapping", True, "metadata must be a mapping"),
    (f"name: x\n{DESC}\nmetadata:\n  tags: [a, b]\n  ok: yes", True, "metadata values must be text; ignored: tags"),
    (f"name: x\n{DESC}\nallowed-tools: {{Read: true}}", True, "allowed-tools must be a space-separated string"),
    (f"name: [x]\n{DESC}", True, "name must be text, not a list"),
    (f"name: x\n{DESC}\nlicense: [MIT]", True, "license must be text, not a list"),
    (f"name: x\n{DESC}\ncompatibility: {{a: b}}", True, "compatibility must be text, not a mapping"),
])
def test_wrong_types_skip_or_warn(tmp_path, front, loads, message):
    skill, diags = load_skill(make_skill(tmp_path, "x", front))
    assert (skill is not None) is loads
    expected_level = "warning" if loads else "error"
    assert any(d.level == expected_level and message in d.message for d in diags), diags
    if loads:
        assert not errors(diags) and skill.name == "x"


def test_wrong_types_that_are_scalars_are_kept_as_text(tmp_path):
    skill, diags = load_skill(make_skill(tmp_path, "x", """
name: x
description: 42
metadata:
  version: 1.0
  released: 2025-01-31
  stable: true
  empty:
"""))
    assert skill.description == "42" and any("quote it" in m for m in warnings(diags))
    assert skill.metadata == {"version": "1.0", "released": "2025-01-31", "stable": "true"}
    assert not is_valid(validate_skill(skill.path))  # strictly, metadata values must be strings


def test_a_huge_skill_md_is_skipped_without_reading_it(tmp_path, monkeypatch):
    folder = tmp_path / "huge"
    folder.mkdir()
    big = "---\nname: huge\ndescription: big\n---\n" + "x" * (2 * MAX_SKILL_BYTES)
    (folder / SKILL_FILE).write_text(big)
    read_bytes = []

    class Spy(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            read_bytes.append(len(data))
            return data

    def spy_open(path, mode="r", *args, **kwargs):
        assert mode == "rb"
        return Spy(path, "r")

    def no_yaml(*args, **kwargs):
        raise AssertionError("YAML must not be parsed for a file over the limit")

    monkeypatch.setattr(fmt, "open", spy_open, raising=False)
    monkeypatch.setattr(fmt.yaml, "load", no_yaml)
    skill, diags = load_skill(folder)
    assert skill is None
    assert [d.level for d in diags] == ["error"] and "too large" in diags[0].message
    assert sum(read_bytes) == 0
    assert "too large" in errors(validate_skill(folder))[0]
    assert sum(read_bytes) == 0


def test_a_skill_md_just_under_the_limit_still_loads(tmp_path):
    head = "---\nname: big\ndescription: big\n---\n"
    folder = make_skill(tmp_path, "big", "name: big\ndescription: big", body="x" * (MAX_SKILL_BYTES - len(head)))
    assert (folder / SKILL_FILE).stat().st_size == MAX_SKILL_BYTES
    skill, diags = load_skill(folder)
    assert skill is not None and diags == []


def test_front_matter_longer_than_the_first_read_still_loads(tmp_path):
    long_desc = "word " * 5000  # ~25 KB, past the first chunk read
    skill, diags = load_skill(make_skill(tmp_path, "x", f"name: x\ndescription: {long_desc}"))
    assert diags == []
    assert skill is not None and skill.description == long_desc.strip()
    assert skill.body() == BODY.strip()


def test_load_skill_leaves_the_body_on_disk(tmp_path, monkeypatch):
    marker = "UNIQUE-BODY-MARKER-41"
    folder = make_skill(tmp_path, "x", f"name: x\n{DESC}", body=f"# X\n\n{marker}\n")

    def no_body(self):
        raise AssertionError("load_skill must not read the body")

    monkeypatch.setattr(Skill, "body", no_body)
    skill, diags = load_skill(folder)
    assert diags == [] and skill is not None
    assert marker not in repr(skill) and marker not in repr(vars(skill))
    data = (folder / SKILL_FILE).read_bytes()
    assert data[skill.body_offset:].decode() == f"# X\n\n{marker}\n"


# -- warnings ------------------------------------------------------------------------------------------


def test_a_body_over_500_lines_is_warned_about(tmp_path):
    ok = make_skill(tmp_path, "ok", f"name: ok\n{DESC}", body="line\n" * 500)
    assert validate_skill(ok) == []
    long = make_skill(tmp_path, "long", f"name: long\n{DESC}", body="line\n" * 501)
    diags = validate_skill(long)
    assert is_valid(diags) and any("501 lines" in m for m in warnings(diags))


def test_a_body_over_about_5000_tokens_is_warned_about(tmp_path):
    ok = make_skill(tmp_path, "ok", f"name: ok\n{DESC}", body="word " * 3900 + "\n")  # ~19.5 KB: ~4,875 tokens
    assert validate_skill(ok) == []
    big = make_skill(tmp_path, "big", f"name: big\n{DESC}", body="word " * 4100 + "\n")  # ~20.5 KB
    diags = validate_skill(big)
    assert is_valid(diags) and any("tokens" in m for m in warnings(diags))


def test_angle_brackets_in_the_description_are_warned_about(tmp_path):
    folder = make_skill(tmp_path, "x", "name: x\ndescription: Use for <system> prompts > 1 page.")
    diags = validate_skill(folder)
    assert is_valid(diags) and any("angle brackets" in m for m in warnings(diags))
    folder = make_skill(tmp_path, "y", "name: <y>\ndescription: fine")
    assert any("angle brackets" in m for m in warnings(validate_skill(folder)))


def test_file_references_more_than_one_level_deep_are_warned_about(tmp_path):
    folder = make_skill(tmp_path, "deep", f"name: deep\n{DESC}", body=(
        "See [the details](references/a/b.md) and [ok](references/REFERENCE.md).\n"
        "Run `scripts/tools/run.py` or scripts/extract.py.\n"
        "Images: ![x](./assets/img/logo.png)\n"
        "Read $SKILL/references/api/v2.md or {baseDir}/scripts/lib/util.sh.\n"))
    (folder / "references" / "a").mkdir(parents=True)
    (folder / "references" / "a" / "b.md").write_text("b\n")
    msgs = warnings(validate_skill(folder))
    assert len(msgs) == 1
    assert "references/a/b.md" in msgs[0] and "and 2 more" in msgs[0]
    found = fmt._deep_references((folder / SKILL_FILE).read_text(), folder)
    assert found == ["references/a/b.md", "assets/img/logo.png", "scripts/tools/run.py", "references/api/v2.md",
                     "scripts/lib/util.sh"]
    assert "REFERENCE.md" not in msgs[0] and "extract.py" not in msgs[0]


def test_urls_and_other_paths_are_not_file_references(tmp_path):
    folder = make_skill(tmp_path, "x", f"name: x\n{DESC}", body=(
        "See [docs](https://example.com/a/b/c.md) and [here](#a/b/c).\n"
        "Write results to experiments/2025/data/out.csv in the user's repository.\n"
        "Use the [one-level guide](references/guide.md) and `scripts/run.py`.\n"))
    assert validate_skill(folder) == []


# -- body() and files() --------------------------------------------------------------------------------


def test_body_is_the_markdown_after_the_front_matter(tmp_path):
    folder = make_skill(tmp_path, "x", f"name: x\n{DESC}", body="\n# Title\n\n---\n\nA rule above; text.\n\n")
    skill, _ = load_skill(folder)
    assert skill.body() == "# Title\n\n---\n\nA rule above; text."


def test_body_follows_edits_made_after_loading(tmp_path):
    folder = make_skill(tmp_path, "x", f"name: x\n{DESC}", body="# Old\n")
    skill, _ = load_skill(folder)
    (folder / SKILL_FILE).write_text(f"---\nname: x\n{DESC}\nlicense: a much longer front matter now\n---\n# New\n")
    os.utime(folder / SKILL_FILE, ns=(skill.mtime_ns + 10**9, skill.mtime_ns + 10**9))
    assert skill.body() == "# New"


def test_files_lists_the_skills_files(tmp_path):
    folder = make_skill(tmp_path, "x", f"name: x\n{DESC}")
    for rel in ("scripts/extract.py", "references/REFERENCE.md", "references/forms/FORMS.md", "LICENSE.txt",
                ".git/config", "node_modules/pkg/index.js", "scripts/__pycache__/extract.cpython-312.pyc",
                "sub/SKILL.md"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x\n")
    (folder / "assets" / "fonts").mkdir(parents=True)
    (folder / "assets" / "fonts" / "Font.ttf").write_bytes(bytes(range(256)) * 4)
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of the skill\n")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "leak.txt").write_text("no\n")
    os.symlink(outside, folder / "assets" / "secret-link.txt")
    os.symlink(tmp_path / "outside-dir", folder / "linked-dir")
    os.symlink(folder / "LICENSE.txt", folder / "assets" / "license-link.txt")
    skill, _ = load_skill(folder)
    files = skill.files()
    assert files == sorted(files)
    assert files == ["LICENSE.txt", "assets/fonts/Font.ttf", "assets/license-link.txt", "references/REFERENCE.md",
                     "references/forms/FORMS.md", "scripts/extract.py", "sub/SKILL.md"]
    assert len(skill.files(limit=3)) == 3

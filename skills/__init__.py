"""Agent Skills packs (SKILL.md), above memory: `format` (parse and validate), `catalog` (discovery, the prompt's
skills section, search), `install` and `lock` (staging, sources, skills.lock.json), `scan/` (what a pack's files could
do), `tool` (`use_skill`, hot reload). Nothing here prints or parses arguments: cli/skills.py and
cli/skill_install.py do."""

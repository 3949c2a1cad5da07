"""Agent Skills packs (SKILL.md), above memory: `format` (parse and validate), `catalog` (discovery, the prompt's
skills section, search), `install` (install and update, staged), `sources` (folders, git, archives), `plan` (which
skills a source offers, marketplaces included), `lock` (skills.json, skills.lock.json, verify, rollback, remove),
`scan/` (what a pack's files could do), `tool` (`use_skill`, hot reload). Nothing here prints or parses arguments:
cli/skills.py and cli/skill_install.py do."""

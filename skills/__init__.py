"""Agent Skills packs (SKILL.md): discovery, validation, install (see the skills issue)."""

"""Agent backends: what does a run's turns. loopwright's own loop (`harness.loop.AgentLoop`) is the
`loopwright` backend; an external command-line agent (Claude Code, Codex, any command) is supervised the same
way through a `CliAgent` (`harness.agents.base`)."""

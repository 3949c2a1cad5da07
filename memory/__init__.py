"""Memory: the store (SQLite, the single source of truth) and every SQL statement of loopwright, above the harness.

`store` (tasks, runs, events, checkpoints, commands, scratch pads, progress files; guarded status changes by the table
in harness/statuses.py) and `schema` (its migrations); one small module of query functions per table family:
`chat` (threads, messages), `notifications`, `quota` (rate-limit gates), `budget` (the fleet's spend),
`commands` (reads beyond the queue), `feed` (what the TUI reads); `lessons` (with the global lessons.db),
`artifacts`, the memory tools an agent uses (`tools`, `run`), `config` (the [memory] section) and `paths`.
Nothing here imports runtime/, skills/, tui/ or the CLI.
"""

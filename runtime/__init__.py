"""Runtime, above harness, memory and skills: config and projects, the one-task runner (the local backend),
posting and actions on runs, progress display, the offline demo; `fleet/` (daemon), `chat/`, `learning/`
(reflection, eval, self-play) and `backends/` (Ray)."""

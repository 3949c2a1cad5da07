"""The store (SQLite, the single source of truth): tasks, runs, events, checkpoints, artifacts."""

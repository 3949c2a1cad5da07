"""Git workspaces: a worktree per run, checkpoints, rollback, merge, gc."""

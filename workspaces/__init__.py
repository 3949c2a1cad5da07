"""Git, the bottom of the package (it imports only `errors`): a worktree and branch per run, checkpoints, rollback,
the squash merge, removal (gc)."""

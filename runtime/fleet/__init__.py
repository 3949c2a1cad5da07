"""The fleet: the daemon that runs queued tasks in parallel, the task inbox folder, notifications, the shared
rate-limit gates (quota), the fleet budget and worktree hygiene (gc, disk floor)."""

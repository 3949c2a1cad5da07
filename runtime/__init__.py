"""Runtime: config, the one-task runner, the CLI and the offline demo."""

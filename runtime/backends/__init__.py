"""Where a run's loop executes: the runner's executor seam (`executor`), the local backend (`local`: in this
process, the default) and the Ray backend (`ray/`, `backend = "ray"`: the runs spread over a cluster)."""

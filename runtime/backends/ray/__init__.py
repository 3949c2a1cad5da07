"""The ray backend: the fleet's agent runs on a Ray cluster, while the head (the daemon) keeps the store.

The daemon (`loopwright serve --backend ray`) runs on a node of the cluster — the head — and keeps what the
local backend keeps: the SQLite store, the scheduler, the budgets, the chat and the merges. Each run executes
on a Ray worker in its own actor (`RunActor`, detached and named after the run), which:

- clones the project's git remote into a cache on its machine (once; later runs fetch), checks out the
  run's branch `lw/<run>` at the commit the head says, and pushes the branch at every checkpoint (and
  rollback), so the head and every other node see every checkpoint on the remote;
- drives the same `AgentLoop` as the local backend against a store proxy: events, model-call records,
  progress and scratch pad writes are batched and sent to `HeadService`, an actor pinned to the head node
  that writes them through the real store, in order per run (a batch sequence number makes a retried batch
  harmless). Commands (pause, kill, rollback, messages) come back with the batch at each model boundary; a
  pause or kill from the daemon also reaches the actor at once, interrupting a model call in flight;
- asks the head for permission before every model call: the head applies the run's pending batch, then
  checks the fleet budget and the run's own limits on the store (one round trip, shared with the commands);
  the provider's rate-limit gate lives in the store too and is reached through the head;
- runs the acceptance check in its worktree; the merge into the target branch happens on the head, which
  fetches the run branch from the remote and squash-merges as the local backend does.

Failures: a worker (or its whole node) that dies makes the head start the run again on another node from its
last checkpoint recorded in the store (up to `ray.max_node_failures` times); a head that restarts finds the
runs' actors still alive on the cluster by name and reattaches to them, or resumes the runs from their last
checkpoints when the cluster went down with it (a local cluster does).

What stays on the head: reflection after a run (a model call of its own), recalled lessons (sent with the run),
the chat, and merges. Not on workers yet: skills (their folders live on the head's disk), so a run on the
cluster gets the standard, memory and artifact tools (and `fan_out` for a chat request) but no `use_skill`.
`loopwright run` (one task in the foreground) stays local.

It works through the seams the local backend uses, not by overriding its internals: the runner's executor
(`executor.RayExecutor`: the run placed on a branch of the git remote, executed by a `RunActor`, merged on the
head), and on the worker the loop's call permit and command source (`store_proxy.HeadLink`), its checkpoint sink
(`workspace.PushedCheckpoints`) and its `RunLog` (`store_proxy.StoreProxy`). The modules: `cluster` (the daemon's
`RayBackend`), `executor`, `worker` (the actor and the worker's tools), `store_proxy`, `head` (`HeadService`),
`workspace` (git against the remote) and `wire` (what crosses between them).

Ray is optional (`pip install 'loopwright[ray]'`): it is imported only when the backend starts.
"""

from loopwright.runtime.backends.ray.cluster import RayBackend

__all__ = ["RayBackend"]

"""One agent's loop, at the bottom of the package (it imports only `workspaces`): the loop (`loop`), the messages
and events it writes, model adapters and the scripted model, retries, tools and the sandbox, budgets
(`budget`, `models`), and the loopback API server. What it needs of the store is the `RunLog` protocol
(`runlog`), which `memory.store.Store` satisfies; what a backend may do differently is passed in through its
seams (`seams`: the call permit, the command source, the checkpoint sink)."""

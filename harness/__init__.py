"""One agent's loop: model adapters, tools, context, budgets, the scripted model and the loopback API server."""

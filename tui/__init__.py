"""The Textual app that supervises a project's fleet, above runtime: `app` (the fleet view and its actions),
`run_view` (one run), `chat_view` (a thread), `feed` (what the views read from the store, polled). It reads the
store and writes commands into it; it never calls into the daemon's memory."""

"""The Textual app that supervises a project's fleet, above runtime: `app` (the shell), `fleet_view` and
`queue_view` (with `widgets` and `dialogs`), `run_view` (one run), `chat_view` (a thread), `feed` (what the views
read from the store, polled). It reads the store and writes commands into it; it never calls into the daemon's
memory."""

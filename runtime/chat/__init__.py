"""Group chat: threads and messages people post work into, and the replies the runs post back."""

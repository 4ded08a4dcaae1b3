"""The agent console API under /v1/console: the handoff queue, tickets, replies to customers, and a live socket."""

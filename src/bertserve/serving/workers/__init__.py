"""Worker processes: the message protocol, the worker's loop, and the server-side pool."""

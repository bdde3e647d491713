"""The ``streamer`` command: serve, the HTTP client commands, and admin commands."""

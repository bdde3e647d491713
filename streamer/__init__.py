"""streamer: append-only job event logs, streamed live over SSE, WebSocket and text.

Three layers, each importing only the ones below it (``docs/architecture.md``):

- ``cli``: the ``streamer`` command (the HTTP client, ``run``, admin commands);
- ``server``: the HTTP service (routes, transports, the socket fast path) and
  ``storage``: SQLite and PostgreSQL, SQL only;
- ``core``: values, rules, the hub and the replay→live merge, with no framework.
"""

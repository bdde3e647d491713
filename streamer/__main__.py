"""``python -m streamer`` is the ``streamer`` command."""

from .cli import run

run()

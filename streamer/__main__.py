"""``python -m streamer`` is the ``streamer`` command."""

from .cli.main import run

run()

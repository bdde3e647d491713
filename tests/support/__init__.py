"""Helpers shared by the test packages: a live server, real clients, processes, PostgreSQL."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent  # the repository's root

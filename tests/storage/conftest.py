"""Every storage test runs on each backend: the ``backend`` and ``storage`` fixtures."""

from ..support.backends import backend, storage

__all__ = ["backend", "storage"]

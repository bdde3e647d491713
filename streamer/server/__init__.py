"""The HTTP service: routes, streaming transports, security, metrics, and serving it."""

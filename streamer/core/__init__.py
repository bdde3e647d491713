"""The service without a framework: values, rules, the hub and the replay→live merge.

Nothing here imports a web framework, an HTTP or WebSocket library, or a database
driver; ``tests/core/test_layers.py`` keeps it that way.
"""

"""The service's own HTTP/1.1 and WebSocket server: every bound in one place, and a
lean path for the hot routes that never enters the framework."""

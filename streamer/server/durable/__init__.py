"""The Durable Streams protocol on streamer's jobs: ``/v1/stream/{path}``."""

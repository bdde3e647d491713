"""The bounds one HTTP server holds, whoever connects (from the settings table)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 5.0  # first byte of a request to the end of its head
    request_timeout: float = 30.0  # end of the head to the end of the body
    keepalive_timeout: float = 5.0  # an idle keep-alive connection is closed after this
    max_pipelined: int = 16  # complete requests waiting behind the one being answered
    max_head_bytes: int = 16 * 1024  # request line and headers
    max_headers: int = 100
    max_request_bytes: int = 1 << 20  # a request body
    write_high_water: int = 64 * 1024  # buffered response bytes before writers wait
    max_connections_per_client: int = 256  # open connections from one address
    unlimited_clients: frozenset[str] = frozenset({"127.0.0.1", "::1"})  # except these
    fd_reserve: int = 64  # descriptors kept free for the database, logs and the like
    ws_max_message_bytes: int = 64 * 1024
    ws_ping_interval: float = 15.0
    ws_ping_timeout: float = 20.0
    ws_max_pings_per_second: int = 10

"""Writing pre-framed events straight to sockets, past the ASGI ``send`` chain."""

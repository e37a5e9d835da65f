"""Serving a local HTTP server (the review page, the resolution service) until it is told to stop."""

from __future__ import annotations

import signal
from socketserver import BaseServer


def serve_until_stopped(server: BaseServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then close. The handlers are installed here, whatever the parent left: a
    shell's background job inherits SIGINT ignored, and Python would then never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

"""Prometheus metrics endpoint for a process (loopback only)."""
from __future__ import annotations

from prometheus_client import start_http_server


def serve(port: int) -> None:
    """Expose the default registry on 127.0.0.1:``port`` (0 disables it)."""
    if port:
        start_http_server(port, addr="127.0.0.1")

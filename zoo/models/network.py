"""Whether a server answers, asked before a library would wait on it (W&B's server, the Hugging Face hub)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def reachable(host: str, timeout: float = 3.0) -> bool:
    """A TCP connection to ``host`` (a URL: scheme, name, optional port) opens within ``timeout`` seconds."""
    url = urlsplit(host)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False

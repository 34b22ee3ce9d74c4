"""A tiny TLS server on 127.0.0.1 and a verifying client, for real handshakes in tests."""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tls_server(cert_pem: str, key_pem: str) -> Iterator[int]:
    """Serve TLS with this certificate on an ephemeral port; yields the port.

    Each connection completes the handshake, receives b"ok" and is closed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_text(cert_pem)
        key.write_text(key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)  # lets the accept loop notice the stop flag
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def handshake(port: int, trust_pem: str, server_hostname: str) -> bytes:
    """Connect, verify the server's chain against ``trust_pem`` and its name; return data."""
    ctx = ssl.create_default_context(cadata=trust_pem)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        return tls.recv(2)

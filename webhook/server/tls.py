"""The serving certificate: loaded from a directory, and reloaded when it changes.

The directory is polled, because a mounted Secret changes by an atomic symlink swap
(``..data`` -> a new timestamped directory), which sends no write event on the files
themselves. A changed pair is checked (the key must match the certificate) and then
loaded into the one live ``SSLContext``: OpenSSL copies the certificate into each
connection when the connection is made, so new handshakes get the new certificate and
connections already open keep theirs. Nothing restarts and no request fails.

The load happens on the event-loop thread, the thread that runs every handshake, so no
handshake ever sees the context half-way between the old pair and the new one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.files import TLS_CERT_FILE, TLS_KEY_FILE

log = logging.getLogger(__name__)


class CertificateError(Exception):
    """A certificate directory that cannot be served from: one line naming what and where."""


@dataclass(frozen=True)
class CertificatePair:
    cert_pem: bytes
    key_pem: bytes
    not_after: dt.datetime
    subject: str
    fingerprint: str


def read_pair(cert_dir: Path) -> CertificatePair:
    """Read and check tls.crt and tls.key (blocking file I/O: call it off the event loop)."""
    cert_path, key_path = cert_dir / TLS_CERT_FILE, cert_dir / TLS_KEY_FILE
    try:
        cert_pem = cert_path.read_bytes()
    except OSError as err:
        raise CertificateError(f"{cert_path}: cannot read ({err.strerror})") from None
    try:
        key_pem = key_path.read_bytes()
    except OSError as err:
        raise CertificateError(f"{key_path}: cannot read ({err.strerror})") from None
    return check_pair(cert_pem, key_pem, where=str(cert_dir))


def check_pair(cert_pem: bytes, key_pem: bytes, *, where: str) -> CertificatePair:
    """The pair, if the key belongs to the (first) certificate; else CertificateError."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError(f"{where}/{TLS_CERT_FILE}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{where}/{TLS_KEY_FILE}: not an unencrypted PEM key") from None
    leaf = certs[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, public) != key.public_key().public_bytes(der, public):
        raise CertificateError(f"{where}: {TLS_KEY_FILE} does not belong to {TLS_CERT_FILE}")
    return CertificatePair(
        cert_pem=cert_pem,
        key_pem=key_pem,
        not_after=leaf.not_valid_after_utc,
        subject=leaf.subject.rfc4514_string(),
        fingerprint=hashlib.sha256(cert_pem + key_pem).hexdigest(),
    )


def server_context() -> ssl.SSLContext:
    """TLS 1.2 or newer, HTTP/1.1 by ALPN, no client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def load_into(context: ssl.SSLContext, pair: CertificatePair) -> None:
    """Put the pair into the context, from private temporary files.

    ``load_cert_chain`` takes only paths. Loading straight from the mounted directory
    could read the certificate before a symlink swap and the key after it, so the
    checked bytes are copied to a private directory first.
    """
    with tempfile.TemporaryDirectory(prefix="rollout-webhook-tls-") as tmp:
        cert_path = os.path.join(tmp, TLS_CERT_FILE)
        key_path = os.path.join(tmp, TLS_KEY_FILE)
        for path, data in ((cert_path, pair.cert_pem), (key_path, pair.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path)


def require_client_certificates(context: ssl.SSLContext, ca_file: Path) -> None:
    """Make the handshake fail unless the client shows a certificate that a CA in
    ``ca_file`` signed (mutual TLS: only the API server may call the admission port)."""
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except FileNotFoundError:
        raise CertificateError(f"{ca_file}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or "not a PEM CA certificate"
        raise CertificateError(f"{ca_file}: cannot load ({why})") from None
    if not context.get_ca_certs():
        raise CertificateError(f"{ca_file}: holds no CA certificate")
    context.verify_mode = ssl.CERT_REQUIRED


class ReloadingCertificate:
    """The live SSLContext for one certificate directory, kept current by polling."""

    def __init__(
        self,
        cert_dir: Path,
        *,
        poll_seconds: float = 2.0,
        on_loaded: Callable[[CertificatePair], None] | None = None,
        on_error: Callable[[CertificateError], None] | None = None,
    ) -> None:
        self.cert_dir = cert_dir
        self.poll_seconds = poll_seconds
        self.context = server_context()
        self.current: CertificatePair | None = None
        self._on_loaded = on_loaded
        self._on_error = on_error

    def load(self) -> CertificatePair:
        """The first load, before serving: an unusable directory stops the start-up."""
        pair = read_pair(self.cert_dir)
        self._install(pair)
        return pair

    def _install(self, pair: CertificatePair) -> None:
        load_into(self.context, pair)
        self.current = pair
        if self._on_loaded is not None:
            self._on_loaded(pair)

    async def check_once(self) -> bool:
        """Reload when the pair on disk differs from the one in use; True when reloaded.

        A pair that does not check out (half-written, key of another certificate) is
        logged and skipped: the certificate in use stays until a good pair appears.
        """
        try:
            pair = await asyncio.to_thread(read_pair, self.cert_dir)
        except CertificateError as err:
            log.warning("certificate not reloaded: %s", err)
            if self._on_error is not None:
                self._on_error(err)
            return False
        if self.current is not None and pair.fingerprint == self.current.fingerprint:
            return False
        self._install(pair)
        log.info("serving certificate reloaded: %s, expires %s", pair.subject, pair.not_after)
        return True

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.check_once()

"""A bundle as files in a directory: ``tls.crt``, ``tls.key`` and ``ca.crt``.

The layout of a mounted kubernetes.io/tls Secret, so the server reads a local bundle and
a mounted one the same way. The CA key is not written: a local bundle is renewed by
generating a new one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from certs.pki import (
    CA_CERT_KEY,
    TLS_CERT_KEY,
    TLS_KEY_KEY,
    Bundle,
    self_signed_for_localhost,
    split_pem_certificates,
)

TLS_CERT_FILE = TLS_CERT_KEY
TLS_KEY_FILE = TLS_KEY_KEY
CA_CERT_FILE = CA_CERT_KEY


@dataclass(frozen=True)
class BundlePaths:
    """Where a bundle's files are: what uvicorn's ``ssl_certfile`` / ``ssl_keyfile`` take."""

    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / TLS_CERT_FILE

    @property
    def key(self) -> Path:
        return self.directory / TLS_KEY_FILE

    @property
    def ca(self) -> Path:
        return self.directory / CA_CERT_FILE


def write_bundle_dir(bundle: Bundle, directory: Path | str) -> BundlePaths:
    """Write the three files, creating the directory; the key is readable by the owner only.

    Each file is written to a temporary name and renamed, so a server polling the
    directory never reads half a certificate.
    """
    paths = BundlePaths(Path(directory))
    paths.directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths.ca, bundle.trust_pem, 0o644)
    _write_atomic(paths.key, bundle.key_pem, 0o600)
    _write_atomic(paths.cert, bundle.cert_pem, 0o644)
    return paths


def read_bundle_dir(directory: Path | str) -> Bundle:
    """Read a bundle; a missing file reads as empty, which ``check_bundle`` reports.

    ``ca.crt`` may hold several CAs (during a rotation): the first is taken as the one
    that signs, the others as previous CAs.

    Raises ``FileNotFoundError`` / ``NotADirectoryError`` when the directory is not there.
    """
    paths = BundlePaths(Path(directory))
    if not paths.directory.exists():
        raise FileNotFoundError(f"directory {paths.directory} does not exist")
    if not paths.directory.is_dir():
        raise NotADirectoryError(f"{paths.directory} is not a directory")
    cas = split_pem_certificates(_read(paths.ca))
    return Bundle(
        ca_pem=cas[0] if cas else _read(paths.ca),
        cert_pem=_read(paths.cert),
        key_pem=_read(paths.key),
        previous_ca_pems=cas[1:],
    )


def write_localhost_bundle(now: datetime, directory: Path | str | None = None) -> BundlePaths:
    """Make a bundle for ``localhost`` / ``127.0.0.1`` and write it (``serve`` with no flags).

    With no directory, a fresh private temporary directory is used; the caller owns it.
    """
    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="rollout-webhook-"))
    return write_bundle_dir(self_signed_for_localhost(now), target)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        # Not PEM; returned as-is for check_bundle to call unreadable.
        return path.read_bytes().decode("latin-1")


def _write_atomic(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

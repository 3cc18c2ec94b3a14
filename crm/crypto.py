"""Secrets at rest (WhatsApp access tokens, app secrets, linked-device sessions).

Encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under ENCRYPTION_KEY; when it is unset the
key is derived from SECRET_KEY, so a laptop needs no extra setting (production refuses to start
without a key of its own: crm/__init__.py). Rotating: put the new key
first in ENCRYPTION_KEY, comma-separated, and old ones after it (MultiFernet decrypts with any).
"""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


def _fernet() -> MultiFernet:
    configured = current_app.config.get("ENCRYPTION_KEY", "")
    if configured:
        return MultiFernet([Fernet(key.strip()) for key in configured.split(",") if key.strip()])
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"wasl-secrets",
                   info=b"fernet").derive(current_app.config["SECRET_KEY"].encode())
    return MultiFernet([Fernet(base64.urlsafe_b64encode(derived))])


def encrypt(data: dict | bytes) -> bytes:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return _fernet().encrypt(raw)


def decrypt_json(token: bytes | None) -> dict:
    return json.loads(decrypt_bytes(token) or b"{}")


def decrypt_bytes(token: bytes | None) -> bytes | None:
    if not token:
        return None
    try:
        return _fernet().decrypt(bytes(token))
    except InvalidToken as exc:
        raise RuntimeError("a stored secret cannot be decrypted with ENCRYPTION_KEY") from exc


def masked(secret: str | None) -> str:
    """A secret as shown back to people: its last four characters only."""
    if not secret:
        return ""
    return "•" * 8 + secret[-4:] if len(secret) > 8 else "•" * 8

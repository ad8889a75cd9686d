"""Write keys and CRM token encryption.

Write keys are 192 random bits, so a single SHA-256 digest is enough to make a stolen table
useless (no dictionary to try) while letting ingestion find the key with one indexed lookup;
a slow password hash would cost milliseconds on every request for no gain.

CRM tokens are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) through ``MultiFernet``: the
first key of ``TOKEN_ENCRYPTION_KEYS`` encrypts, every listed key decrypts, so keys can be rotated
by prepending a new one and re-encrypting (``pql keys rotate-tokens``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

WRITE_KEY_PREFIX = "wk_"
ADMIN_KEY_PREFIX = "ak_"
DISPLAY_PREFIX_LENGTH = 10


@dataclass(frozen=True)
class NewWriteKey:
    """A freshly made key: ``secret`` is shown once and never stored."""

    secret: str
    key_hash: str
    display_prefix: str


def hash_write_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_write_key(admin: bool = False) -> NewWriteKey:
    secret = (ADMIN_KEY_PREFIX if admin else WRITE_KEY_PREFIX) + secrets.token_urlsafe(24)
    return NewWriteKey(
        secret=secret,
        key_hash=hash_write_key(secret),
        display_prefix=secret[:DISPLAY_PREFIX_LENGTH],
    )


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class TokenDecryptionError(RuntimeError):
    """A stored token could not be decrypted with any configured key."""


class TokenCipher:
    def __init__(self, keys: tuple[str, ...] | list[str]):
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise TokenDecryptionError(
                "stored token cannot be decrypted with TOKEN_ENCRYPTION_KEYS"
            ) from exc

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt with the primary (first) key."""
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise TokenDecryptionError(
                "stored token cannot be decrypted with TOKEN_ENCRYPTION_KEYS"
            ) from exc


def new_encryption_key() -> str:
    return Fernet.generate_key().decode("ascii")

"""Encryption at rest of private keys and cluster secrets: Fernet under a key derived by scrypt.

A token is ``"<salt>$<fernet token>"``: each secret has its own random salt, so the same
passphrase never gives two secrets the same key, and nothing in the token reveals the passphrase.
"""

from __future__ import annotations

import base64
import os

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from workbench.clusters.errors import KeyDecryptionError, ValidationError

# scrypt cost: about 30 ms per derivation, paid once per secret read or written
_N, _R, _P = 2**14, 8, 1


def _fernet(passphrase: str | bytes, salt: bytes) -> Fernet:
    if not passphrase:
        raise ValidationError("a passphrase or master key is required to encrypt secrets at rest",
                              field="passphrase")
    secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
    key = Scrypt(salt=salt, length=32, n=_N, r=_R, p=_P).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: bytes, passphrase: str | bytes) -> str:
    """Encrypt ``plaintext`` under ``passphrase``; returns an ASCII token safe to store in a column."""
    salt = os.urandom(16)
    token = _fernet(passphrase, salt).encrypt(plaintext)
    return base64.urlsafe_b64encode(salt).decode() + "$" + token.decode()


def decrypt(token: str, passphrase: str | bytes) -> bytes:
    """The plaintext of an ``encrypt`` token; ``KeyDecryptionError`` on a wrong passphrase."""
    try:
        salt_text, fernet_token = token.split("$", 1)
        return _fernet(passphrase, base64.urlsafe_b64decode(salt_text)).decrypt(fernet_token.encode())
    except (InvalidToken, ValueError) as exc:
        raise KeyDecryptionError("cannot decrypt the stored secret: wrong passphrase or master key") from exc


__all__ = ["encrypt", "decrypt"]

"""API bearer tokens as values: how one is made and how it is stored.

A token is ``sc_`` + 32 random bytes (base64url). Only its SHA-256 is stored. A fast
hash is right here: bcrypt/argon2 exist to slow down guessing low-entropy passwords,
and nobody can guess 256 random bits however fast the hash is. Looking the token up
by its hash (a unique index) also means no byte-by-byte comparison of the secret
happens in our code, so the check leaks nothing through timing.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["TOKEN_PREFIX", "hash_token", "new_token"]

TOKEN_PREFIX = "sc_"  # noqa: S105 a prefix that marks our tokens in logs and scanners, not a secret
# 32 bytes = 256 bits of entropy.
_TOKEN_BYTES = 32


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()

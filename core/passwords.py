"""MQTT passwords: random secrets and Mosquitto's ``$7$`` PBKDF2-SHA512 hashes.

The registry stores a device's password only as the hash Mosquitto 2.0 reads from
its ``password_file`` (``$7$<iterations>$<base64 salt>$<base64 hash>``, what
``mosquitto_passwd`` writes), so exporting the broker's files needs no plaintext
and no plaintext is ever kept.

Generated secrets are 32 random bytes: nobody can guess them however fast the
hash, so they use Mosquitto's own default of 101 iterations and 500 devices log
in without the broker spending seconds of CPU. A password a person chose (a
service account given ``--password-stdin``) gets a slow hash instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = [
    "CHOSEN_ITERATIONS",
    "GENERATED_ITERATIONS",
    "hash_password",
    "new_secret",
    "verify_password",
]

# mosquitto_passwd's default; enough for 256-bit random secrets (see above).
GENERATED_ITERATIONS = 101
# OWASP's 2023 figure for PBKDF2-HMAC-SHA512, for passwords people choose.
CHOSEN_ITERATIONS = 210_000
# Mosquitto 2.0 reads 12-byte salts and 64-byte SHA-512 digests.
_SALT_BYTES = 12
_SECRET_BYTES = 32
_PREFIX = "$7$"


def new_secret() -> str:
    """A random password: 32 bytes, base64url (43 characters, no padding)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _digest(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


def hash_password(
    password: str, *, iterations: int = GENERATED_ITERATIONS, salt: bytes | None = None
) -> str:
    """The ``$7$`` line Mosquitto's password_file holds for ``password``."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    return f"{_PREFIX}{iterations}${_b64(salt)}${_b64(_digest(password, salt, iterations))}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash; False for anything malformed."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        return False
    if iterations < 1:
        return False
    return hmac.compare_digest(_digest(password, salt, iterations), expected)

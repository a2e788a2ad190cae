"""Hashing of passwords, client secrets and tokens.

Passwords and client secrets are chosen by people, so they are hashed with Argon2id, the
algorithm OWASP recommends first for password storage. argon2-cffi's defaults are the RFC
9106 low-memory parameters (64 MiB, 3 passes, 4 lanes), and verifying one hash costs about
0.13 s of CPU on the 2-core reference machine. Tokens are 256 bits from
`secrets.token_urlsafe`, so a guess is hopeless without a slow hash, and the stored SHA-256
digest can be looked up with an index on every request.
"""

from __future__ import annotations

import functools
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()



@functools.cache
def _dummy_hash() -> str:
    """Return a hash to verify against when a login names an unknown user.

    The response then takes as long as for a wrong password and does not reveal which
    emails exist. It is made on first use, because hashing costs about 0.1 s of CPU and
    every command imports this module.
    """
    return _hasher.hash("taskservice-unknown-user")


def hash_secret(secret: str) -> str:
    """Return the Argon2id hash of a password or client secret, in PHC string form."""
    return _hasher.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    """Return whether secret matches secret_hash; a None hash spends the same time and fails."""
    try:
        return _hasher.verify(secret_hash or _dummy_hash(), secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """Return a new random token of 256 bits, URL-safe base64."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()

"""Operator tokens: random, shown once, stored as their SHA-256.

A token is 32 random bytes (256 bits) from `secrets`: nobody can guess it or brute-force its hash, so a slow
password KDF (bcrypt, scrypt, argon2) would add nothing but latency to every API call; those exist to protect
low-entropy human passwords. SHA-256 also makes the stored value a direct lookup key."""
from __future__ import annotations

import hashlib
import secrets

PREFIX = "wbo_"  # recognisable in a leaked config or a secret scanner


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

"""Operator passwords: hashed with scrypt (memory-hard) through Werkzeug's maintained helpers, salted per hash;
the hash names its method and parameters, so stronger ones can come later without breaking old hashes."""
from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

MIN_LENGTH = 10
METHOD = "scrypt:32768:8:1"  # n=2^15, r=8, p=1: ~50 ms and 32 MiB a check; a guessing attack pays both
# Checked when the operator does not exist, so a wrong name costs the same time as a wrong password.
DUMMY_HASH = generate_password_hash("not a password of anyone", method=METHOD)


class WeakPassword(ValueError):
    pass


def hash_password(password: str) -> str:
    """The stored form of a new password; WeakPassword names what is wrong with it."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if password.strip() != password:
        raise WeakPassword("a password must not start or end with spaces")
    return generate_password_hash(password, method=METHOD)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; the same work is done when there is no stored hash."""
    if not stored_hash:
        check_password_hash(DUMMY_HASH, password)
        return False
    return check_password_hash(stored_hash, password)

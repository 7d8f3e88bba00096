"""Sticky routing: a key always lands in the same one of 10,000 buckets, in every process,
host and Python version (BLAKE2b, not the salted built-in `hash()`).

A read goes to the target when its bucket is below `read_percent * 100`; raising the percent
only adds buckets, so a key once on the target stays there, and lowering it removes the most
recently added buckets first. Shadow sampling is decided per read, at random, so whether a
read is shadowed is independent of which store served it and no tenant escapes comparison.
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["BUCKETS", "bucket", "in_percent", "key_fingerprint"]

BUCKETS = 10_000


def bucket(key: str, salt: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"dualvec-route", salt=_salt(salt))
    return int.from_bytes(digest.digest(), "big") % BUCKETS


def _salt(salt: str) -> bytes:
    # BLAKE2b takes at most 16 bytes of salt; hash longer ones down to that.
    raw = salt.encode("utf-8")
    return raw if len(raw) <= 16 else hashlib.blake2b(raw, digest_size=16).digest()


def in_percent(key: str | None, salt: str, percent: float) -> bool:
    """Whether `key` falls within `percent` (0-100); a missing key decides at random."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    threshold = percent * (BUCKETS / 100)
    if key is None:
        return random.random() * BUCKETS < threshold
    return bucket(key, salt) < threshold


def key_fingerprint(key: str | None) -> str | None:
    """A short stable hash of a routing key, for logs that must not carry tenant or user ids."""
    if key is None:
        return None
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"dualvec-key").hexdigest()

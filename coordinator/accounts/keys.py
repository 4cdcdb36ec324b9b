"""API key material: generation, the stored hash and the prefix shown to people.

A key is ``sk-sai-`` followed by 52 base32 characters encoding 32 random bytes (256 bits). Because
the key is uniformly random and that long, a single SHA-256 is a sufficient stored form: there is
nothing to brute-force, so a slow password hash would only slow every request. Keys are looked up
by their hash (a unique index), so lookup time depends on the hash, never on how much of a
guessed key is right.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = [
    "API_KEY_PREFIX",
    "DISPLAY_PREFIX_CHARS",
    "generate_api_key",
    "hash_api_key",
    "is_well_formed_api_key",
    "key_display_prefix",
    "random_id",
]

API_KEY_PREFIX = "sk-sai-"
_KEY_RANDOM_BYTES = 32
_KEY_BODY_CHARS = 52  # base32 of 32 bytes, padding dropped
# How many characters of the key body the displayed prefix keeps (40 bits: tells keys apart).
DISPLAY_PREFIX_CHARS = 8
_WELL_FORMED_KEY = re.compile(re.escape(API_KEY_PREFIX) + f"[a-z2-7]{{{_KEY_BODY_CHARS}}}")


def _base32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def random_id(prefix: str) -> str:
    """``prefix`` + 26 base32 characters of 128 random bits (``acc_...``, ``key_...``)."""
    return prefix + _base32(secrets.token_bytes(16))


def generate_api_key() -> str:
    """A new raw API key. Show it once, store only :func:`hash_api_key` of it."""
    return API_KEY_PREFIX + _base32(secrets.token_bytes(_KEY_RANDOM_BYTES))


def is_well_formed_api_key(raw_key: str) -> bool:
    """Whether ``raw_key`` has the shape of a key (says nothing about whether it exists)."""
    return _WELL_FORMED_KEY.fullmatch(raw_key) is not None


def hash_api_key(raw_key: str) -> bytes:
    """The 32-byte SHA-256 digest stored for, and looked up by, a raw key."""
    return hashlib.sha256(raw_key.encode("utf-8")).digest()


def key_display_prefix(raw_key: str) -> str:
    """``sk-sai-XXXXXXXX``: what lists and logs show instead of the key."""
    return raw_key[: len(API_KEY_PREFIX) + DISPLAY_PREFIX_CHARS]

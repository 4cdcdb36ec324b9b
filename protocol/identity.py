"""Ed25519 identities for nodes and coordinators.

A node's identity is its Ed25519 key pair; its id is derived from the public key, so an id cannot
be claimed without the key. The coordinator has an identity of the same kind; nodes pin its public
key (like SSH ``known_hosts``).

Private keys are stored as unencrypted PKCS#8 PEM in a file of mode 0600. Loading refuses a key
file that group or others can read, the way ``ssh`` does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import BadSignature, KeyFileError

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "Identity",
    "PublicKey",
    "derive_id",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_PUBLIC_KEY_TEXT_PREFIX = "ed25519:"
_FIELD_PRIME = 2**255 - 19
_Y_MASK = (1 << 255) - 1
# The y-coordinates of the 8 small-order points of edwards25519 (the same list libsodium blocks).
# For such a key a signature can be forged without any secret: e.g. key 01 00..00 accepts the
# signature 01 00..00 || 00..00 on every message. tests/protocol/test_identity.py derives this
# list from the curve equation to prove it complete.
_SMALL_ORDER_Y = frozenset(
    int.from_bytes(bytes.fromhex(encoded), "little")
    for encoded in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def derive_id(prefix: str, public_key: bytes) -> str:
    """A stable, printable id for a public key: ``prefix`` + 26 base32 characters of SHA-256.

    130 bits of the hash: collisions are out of reach, and the id is short enough to read aloud.
    """
    digest = hashlib.sha256(b"shareai/v1 id\x00" + public_key).digest()
    return prefix + base64.b32encode(digest[:17]).decode("ascii").lower()[:26]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes) with verification and a text form."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_BYTES:
            raise ValueError(
                f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(self.raw)}"
            )
        y = int.from_bytes(self.raw, "little") & _Y_MASK
        if y >= _FIELD_PRIME:
            raise ValueError("not a canonical Ed25519 public key encoding")
        if y in _SMALL_ORDER_Y:
            raise ValueError("a small-order Ed25519 public key is refused (signatures forgeable)")

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Parse ``ed25519:<base64url>`` (the form :meth:`to_text` writes).

        Raises ValueError with a specific message when the text is not such a key.
        """
        if not text.startswith(_PUBLIC_KEY_TEXT_PREFIX):
            raise ValueError(f"public key must start with {_PUBLIC_KEY_TEXT_PREFIX!r}")
        body = text[len(_PUBLIC_KEY_TEXT_PREFIX) :]
        if "=" in body:
            raise ValueError("public key is not valid base64url: write it without padding")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except ValueError as exc:
            raise ValueError(f"public key is not valid base64url: {exc}") from None
        key = cls(raw)
        if key.to_text() != text:
            # Rejects '+' and '/' and non-zero unused bits: one key, one spelling.
            raise ValueError("public key is not canonical base64url")
        return key

    def to_text(self) -> str:
        return _PUBLIC_KEY_TEXT_PREFIX + base64.urlsafe_b64encode(self.raw).decode().rstrip("=")

    @property
    def node_id(self) -> str:
        """The id of a node holding this key."""
        return derive_id("nd_", self.raw)

    @property
    def coordinator_id(self) -> str:
        """The id of a coordinator holding this key."""
        return derive_id("co_", self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` is this key's over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            raise BadSignature("Ed25519 signature does not verify") from None

    def __repr__(self) -> str:
        return f"PublicKey({self.to_text()})"


class Identity:
    """An Ed25519 private key. Sign with it; never serialise it except through :meth:`save`."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = PublicKey(raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Build an identity from a 32-byte seed (for reproducible examples and tests only)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the private key as PKCS#8 PEM to ``path`` with mode 0600.

        The file is created with its final permissions (never briefly world-readable). Refuses to
        replace an existing file unless ``overwrite`` is true. Raises KeyFileError.
        """
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read a key written by :meth:`save`.

        Raises KeyFileError if the file is missing, readable by group or others, or not an
        unencrypted Ed25519 PKCS#8 key.
        """
        path = Path(path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise KeyFileError(f"key file {path} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if mode & 0o077:
            raise KeyFileError(
                f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                f" run: chmod 600 {path}"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(
                f"key file {path} is not an unencrypted PEM private key: {exc}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"key file {path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def __repr__(self) -> str:
        return f"Identity({self.public_key.to_text()})"

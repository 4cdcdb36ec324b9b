"""Ed25519 identities: key files, ids, text forms and signatures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import BadSignature, Identity, KeyFileError, PublicKey


def test_saved_key_has_mode_0600_and_loads_back_to_the_same_identity(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "keys" / "node.key"
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert loaded.public_key == identity.public_key
    PublicKey(loaded.public_key.raw).verify(loaded.sign(b"m"), b"m")


def test_save_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = Identity.generate()
    first.save(path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        Identity.generate().save(path)
    assert Identity.load(path).public_key == first.public_key
    second = Identity.generate()
    second.save(path, overwrite=True)
    assert Identity.load(path).public_key == second.public_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_refuses_a_key_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600"):
        Identity.load(path)


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        Identity.load(tmp_path / "absent.key")


def test_load_reports_a_file_that_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key\n")
    os.close(fd)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        Identity.load(path)


def test_load_refuses_a_key_of_another_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        Identity.load(path)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        Identity.load(directory)


def test_ids_are_stable_distinct_and_derived_from_the_key() -> None:
    seed = bytes(range(32))
    identity = Identity.from_seed(seed)
    assert identity.public_key.node_id == Identity.from_seed(seed).public_key.node_id
    assert identity.public_key.node_id.startswith("nd_")
    assert len(identity.public_key.node_id) == 29
    assert identity.public_key.coordinator_id.startswith("co_")
    assert identity.public_key.node_id[3:] == identity.public_key.coordinator_id[3:]
    assert Identity.generate().public_key.node_id != identity.public_key.node_id


def test_public_key_text_form_round_trips() -> None:
    key = Identity.generate().public_key
    text = key.to_text()
    assert text.startswith("ed25519:")
    assert "=" not in text
    assert PublicKey.from_text(text) == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rsa:AAAA", "must start with 'ed25519:'"),
        ("ed25519:!!!!", "not valid base64url"),
        ("ed25519:AAAA", "is 32 bytes, got 3"),
        # The same bytes as a valid key, spelled with '+' and '/' instead of '-' and '_'.
        ("ed25519:" + "+/" * 21 + "A", "not canonical base64url"),
    ],
)
def test_public_key_text_form_rejects_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PublicKey.from_text(text)


def test_verify_rejects_another_message_and_another_key() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"usage")
    identity.public_key.verify(signature, b"usage")
    with pytest.raises(BadSignature):
        identity.public_key.verify(signature, b"usagE")
    with pytest.raises(BadSignature):
        Identity.generate().public_key.verify(signature, b"usage")


# --- weak keys ----------------------------------------------------------------------------------
# Reference edwards25519 arithmetic (RFC 8032, section 5.1), used only to derive the set of
# small-order points independently of the blocklist in protocol/identity.py.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_L = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
        (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P,
    )


def _multiply(k: int, point: tuple[int, int]) -> tuple[int, int]:
    result = (0, 1)
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _x_for(y: int) -> int | None:
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P:
        x = x * _SQRT_M1 % _P
    return None if (x * x - xx) % _P else x


def _torsion_y_coordinates() -> set[int]:
    """Multiply points by the prime order L: what remains is their small-order component."""
    found: set[int] = set()
    y = 2
    while len(found) < 5 and y < 500:
        x = _x_for(y)
        if x is not None:
            found.add(_multiply(_L, (x, y))[1])
        y += 1
    return found


def _encodings_of(y: int) -> list[bytes]:
    raw = y.to_bytes(32, "little")
    return [raw, raw[:31] + bytes([raw[31] | 0x80])]


def test_every_small_order_key_is_refused() -> None:
    torsion = _torsion_y_coordinates()
    assert len(torsion) == 5  # y of the 8 points of order 1, 2, 4 and 8
    for y in torsion:
        for raw in _encodings_of(y):
            with pytest.raises(ValueError, match="small-order"):
                PublicKey(raw)


def test_non_canonical_encodings_are_refused() -> None:
    for y in (_P, _P + 1, 2**255 - 1):
        for raw in _encodings_of(y):
            with pytest.raises(ValueError, match="canonical"):
                PublicKey(raw)


def test_the_identity_key_would_accept_a_forged_signature_if_it_were_not_refused() -> None:
    """Why the check exists: the library alone accepts this forgery on any message."""
    identity_point = (1).to_bytes(32, "little")
    forged = identity_point + bytes(32)
    Ed25519PublicKey.from_public_bytes(identity_point).verify(forged, b"any message")
    with pytest.raises(ValueError, match="small-order"):
        PublicKey(identity_point)


def test_ordinary_keys_are_accepted() -> None:
    for _ in range(50):
        key = Identity.generate().public_key
        assert PublicKey(key.raw) == key


def test_text_form_with_padding_is_refused() -> None:
    text = Identity.generate().public_key.to_text() + "="
    with pytest.raises(ValueError, match="without padding"):
        PublicKey.from_text(text)

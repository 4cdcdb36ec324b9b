"""Ed25519 identities: key files, ids, text forms and signatures."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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

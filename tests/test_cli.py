"""The ``shareai`` console script, run as a real process."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import Identity


def shareai(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("shareai", path=str(Path(sys.executable).parent))
    assert executable is not None, "the shareai console script is not installed in this venv"
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_demo_runs_the_handshake_and_refuses_every_attack() -> None:
    result = shareai("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "challenge" in out
    assert "welcome" in out
    assert "'Hello from a ShareAI node!'" in out
    assert "receipt signature verified" in out
    assert "AuthenticationFailed (close 4003)" in out
    assert "SequenceViolation (close 4005)" in out
    assert "FrameTooLarge (close 1009)" in out
    assert "ACCEPTED" not in out
    assert out.rstrip().endswith("Every check held.")


def test_identity_new_writes_a_private_key_and_prints_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    result = shareai("identity", "new", str(path), "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    identity = Identity.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert printed["public_key"] == identity.public_key.to_text()
    assert printed["node_id"] == identity.public_key.node_id

    shown = shareai("identity", "show", str(path))
    assert shown.returncode == 0
    assert identity.public_key.node_id in shown.stdout


def test_identity_new_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    assert shareai("identity", "new", str(path)).returncode == 0
    before = path.read_bytes()
    refused = shareai("identity", "new", str(path))
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == f"shareai: error: {path} already exists; refusing to overwrite a key"
    )
    assert path.read_bytes() == before
    assert shareai("identity", "new", str(path), "--force").returncode == 0
    assert path.read_bytes() != before


def test_identity_show_refuses_a_world_readable_key_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    path.chmod(0o644)
    result = shareai("identity", "show", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "mode 0644" in lines[0]
    assert "chmod 600" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("teleport",), "invalid choice: 'teleport'"),
        (("identity",), "the following arguments are required: {new,show}"),
        (("identity", "show"), "the following arguments are required: path"),
        (("demo", "--fast"), "unrecognized arguments: --fast"),
    ],
)
def test_bad_command_lines_get_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = shareai(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_version_is_printed() -> None:
    result = shareai("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("shareai ")

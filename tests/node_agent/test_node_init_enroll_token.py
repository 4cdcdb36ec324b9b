"""``shareai node init --enroll-token``: a one-time token from the Provider console instead of
the Provider's API key. Flag errors in-process; enrolling against a real coordinator process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from protocol import Identity
from shareai.cli import main
from tests.e2e.network import Network, network, run_shareai

TOKEN = "sai-enroll-" + "a" * 52
API_KEY = "sk-sai-" + "b" * 52


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shareai: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--api-key", API_KEY, "--enroll-token", TOKEN],
         "give either --api-key or --enroll-token, not both"),
        ([], "--api-key or --enroll-token is required (or set SHAREAI_API_KEY"),
        (["--enroll-token", API_KEY], "--enroll-token: not an enrollment token"),
        (["--enroll-token", ""], "--enroll-token: not an enrollment token"),
        (["--api-key", TOKEN], "that is an enrollment token, not an API key"),
    ],
)  # fmt: skip
def test_exactly_one_credential_is_required_before_any_network_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("SHAREAI_API_KEY", raising=False)
    code = main(
        ["node", "init", "--coordinator", "http://127.0.0.1:9",
         "--config", str(tmp_path / "node.toml"), *flags]
    )  # fmt: skip
    assert code == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_a_token_flag_wins_over_the_api_key_environment_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHAREAI_API_KEY", API_KEY)
    code = main(
        ["node", "init", "--coordinator", "http://127.0.0.1:9", "--enroll-token", TOKEN,
         "--config", str(tmp_path / "node.toml")]
    )  # fmt: skip
    assert code == 1  # it got as far as the (unreachable) coordinator
    assert "cannot reach the coordinator" in one_line_error(capsys.readouterr().err)


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with network(tmp_path_factory.mktemp("enroll-token")) as net:
        yield net


def _console_token(net: Network) -> str:
    """A token made the way a Provider makes one: logged in to the console."""
    with httpx.Client(base_url=net.url) as browser:
        assert browser.post("/login", data={"api_key": net.provider_key}).status_code == 303
        page = browser.get("/console/provider").text
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match is not None
        answer = browser.post("/console/provider/tokens", data={"csrf_token": match.group(1)})
        token = re.search(r'id="enroll-token">(sai-enroll-[a-z2-7]+)<', answer.text)
        assert token is not None
        return token.group(1)


def _init(net: Network, token: str, folder: Path, *extra: str) -> tuple[int, str, str]:
    result = run_shareai(
        "node", "init", "--coordinator", net.url, "--enroll-token", token,
        "--config", str(folder / "node.toml"), *extra,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def test_a_console_token_enrolls_a_node_once(coordinator: Network, tmp_path: Path) -> None:
    token = _console_token(coordinator)
    code, out, err = _init(
        coordinator, token, tmp_path / "a",
        "--backend", "mock", "--model", "mock/t", "--price-in", "0.1", "--price-out", "0.2",
    )  # fmt: skip
    assert code == 0, err
    node_id = Identity.load(tmp_path / "a" / "node.key").public_key.node_id
    assert f"node id          {node_id}" in out
    assert "mock/t" in (tmp_path / "a" / "node.toml").read_text()
    assert token not in (tmp_path / "a" / "node.toml").read_text()
    with httpx.Client(base_url=coordinator.url) as browser:
        browser.post("/login", data={"api_key": coordinator.provider_key})
        assert node_id in browser.get("/console/provider").text  # under the Provider's account

    code, _, err = _init(coordinator, token, tmp_path / "b")
    assert code == 1
    line = one_line_error(err)
    assert "401 enroll_token_used" in line
    assert node_id in line
    assert not (tmp_path / "b").exists()


def test_an_unknown_token_fails_in_one_line_and_writes_nothing(
    coordinator: Network, tmp_path: Path
) -> None:
    code, _, err = _init(coordinator, TOKEN, tmp_path)
    assert code == 1
    assert "401 invalid_enroll_token: unknown enrollment token" in one_line_error(err)
    assert list(tmp_path.iterdir()) == []

"""``shareai node init`` and ``shareai node run``: errors in-process, runs as real processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from node_agent import load_config
from protocol import (
    ChatMessage,
    Chunk,
    Done,
    Drain,
    Heartbeat,
    Identity,
    Job,
    JobAccepted,
    SamplingParams,
)
from shareai.cli import main
from tests.node_agent.fake_hub import WAIT_S, FakeCoordinatorApi, FakeHub, HubSide

API_KEY = "sk-provider-test"


def shareai_executable() -> str:
    executable = shutil.which("shareai", path=str(Path(sys.executable).parent))
    assert executable is not None, "the shareai console script is not installed in this venv"
    return executable


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shareai: error: "), err
    return lines[0]


# -- shareai node init ---------------------------------------------------------------------------


def test_init_creates_a_0600_key_pins_the_coordinator_enrolls_and_writes_node_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "conf" / "node.toml"
    with FakeCoordinatorApi(api_key=API_KEY) as api:
        code = main(
            ["node", "init", "--coordinator", api.url, "--api-key", API_KEY,
             "--config", str(config_path),
             "--backend", "mock", "--model", "mock/echo", "--price-in", "0.10",
             "--price-out", "0.2", "--max-concurrency", "2"]
        )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    key_file = tmp_path / "conf" / "node.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    identity = Identity.load(key_file)
    assert [enrolled.node_key for enrolled in api.enrolled] == [identity.public_key]
    assert api.enrolled[0].account_id == "acct_provider1"

    config = load_config(config_path)
    assert config.coordinator_url == api.url
    assert config.coordinator_public_key == api.identity.public_key
    assert config.key_file == key_file
    (model,) = config.models
    assert (model.name, model.backend, model.max_concurrency) == ("mock/echo", "mock", 2)
    assert (model.price_input_micro_usd_per_1m, model.price_output_micro_usd_per_1m) == (
        100_000,
        200_000,
    )
    assert identity.public_key.node_id in out.out
    assert api.identity.public_key.to_text() in out.out  # printed, for the Provider to compare
    assert api.identity.public_key.coordinator_id in out.out


def test_init_without_model_flags_writes_commented_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "node.toml"
    with FakeCoordinatorApi(api_key=API_KEY) as api:
        code = main(
            ["node", "init", "--coordinator", api.url, "--config", str(config_path),
             "--key-file", str(tmp_path / "keys" / "me.key"), "--api-key", API_KEY]
        )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "add a [[models]] entry" in out.out
    text = config_path.read_text()
    assert 'key_file = "keys/me.key"' in text
    assert '# backend = "openai"' in text
    assert stat.S_IMODE((tmp_path / "keys" / "me.key").stat().st_mode) == 0o600


def test_init_with_a_wrong_api_key_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeCoordinatorApi(api_key=API_KEY) as api:
        code = main(
            ["node", "init", "--coordinator", api.url, "--api-key", "sk-wrong",
             "--config", str(tmp_path / "node.toml")]
        )  # fmt: skip
    assert code == 1
    line = one_line_error(capsys.readouterr().err)
    assert "401 invalid_api_key" in line
    assert list(tmp_path.iterdir()) == []
    assert api.enrolled == []


def test_init_refuses_to_replace_a_key_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "node.key"
    Identity.generate().save(key_file)
    before = key_file.read_bytes()
    args = ["node", "init", "--config", str(tmp_path / "node.toml"), "--api-key", API_KEY]
    with FakeCoordinatorApi(api_key=API_KEY) as api:
        assert main([*args, "--coordinator", api.url]) == 1
        assert "already exists; pass --force" in one_line_error(capsys.readouterr().err)
        assert key_file.read_bytes() == before
        assert main([*args, "--coordinator", api.url, "--force"]) == 0
    assert key_file.read_bytes() != before
    assert len(api.enrolled) == 1


def test_init_refuses_a_non_provider_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeCoordinatorApi(api_key=API_KEY, role="customer") as api:
        code = main(
            ["node", "init", "--coordinator", api.url, "--api-key", API_KEY,
             "--config", str(tmp_path / "node.toml")]
        )  # fmt: skip
    assert code == 1
    assert "needs a Provider key" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "mock", "--model", "m", "--price-in", "0.1234567", "--price-out", "1"],
         "--price-in: at most 6 decimals"),
        (["--backend", "mock", "--model", "m", "--price-in", "1"], "--price-out is required"),
        (["--backend", "openai", "--model", "m", "--price-in", "1", "--price-out", "1"],
         '--upstream-url: required for backend "openai"'),
    ],
)  # fmt: skip
def test_init_bad_flag_values_exit_2_before_any_network_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(
        ["node", "init", "--coordinator", "http://127.0.0.1:9", "--api-key", API_KEY,
         "--config", str(tmp_path / "node.toml"), *extra]
    )  # fmt: skip
    assert code == 2
    assert message in one_line_error(capsys.readouterr().err)


def test_init_reports_an_unreachable_coordinator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeCoordinatorApi()
    url = api.url
    api.close()  # nothing listens on that port any more
    code = main(
        ["node", "init", "--coordinator", url, "--api-key", API_KEY,
         "--config", str(tmp_path / "node.toml")]
    )  # fmt: skip
    assert code == 1
    assert f"cannot reach the coordinator at {url}" in one_line_error(capsys.readouterr().err)


# -- shareai node run: errors --------------------------------------------------------------------


def test_run_with_a_bad_config_fails_in_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        f"""
coordinator_url = "http://127.0.0.1:9"
coordinator_key = "{Identity.generate().public_key.to_text()}"
key_file = "node.key"
[[models]]
name = "m"
backend = "mock"
price_in_usd_per_1m = "1.0000001"
price_out_usd_per_1m = "1"
"""
    )
    assert main(["node", "run", "--config", str(config_path)]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "models[0].price_in_usd_per_1m: at most 6 decimals" in line


def test_run_refuses_a_key_file_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "node.key"
    Identity.generate().save(key_file)
    key_file.chmod(0o644)
    code = main(
        ["node", "run", "--coordinator", "http://127.0.0.1:9", "--key-file", str(key_file),
         "--coordinator-key", Identity.generate().public_key.to_text(),
         "--backend", "mock", "--model", "m", "--price-in", "0", "--price-out", "0"]
    )  # fmt: skip
    assert code == 1
    assert "chmod 600" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "node.toml", "--coordinator", "http://x"], "not both"),
        (["--backend", "mock"], "need --coordinator"),
        (["--coordinator", "http://127.0.0.1:9", "--backend", "mock", "--model", "m",
          "--price-in", "1", "--price-out", "1"], "--key-file is required"),
        (["--coordinator", "http://127.0.0.1:9", "--key-file", "k"],
         "--backend, --model, --price-in and --price-out are required"),
        (["--coordinator", "http://127.0.0.1:9", "--key-file", "k", "--coordinator-key", "x",
          "--backend", "mock", "--model", "m", "--price-in", "1", "--price-out", "1"],
         "--coordinator-key: public key must start with 'ed25519:'"),
        (["--coordinator", "gopher://h", "--key-file", "k", "--backend", "mock", "--model", "m",
          "--price-in", "1", "--price-out", "1"], "--coordinator: the coordinator URL must be"),
        (["--coordinator", "http://127.0.0.1:9", "--key-file", "k", "--backend", "mock",
          "--model", "m", "--price-in", "1", "--price-out", "1", "--max-concurrency", "0"],
         "--max-concurrency: input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_run_bad_arguments_exit_2_in_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["node", "run", *args]) == 2
    assert message in one_line_error(capsys.readouterr().err)


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["node", "run", "--backend", "tgi"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# -- shareai node run: real processes against the fake hub ---------------------------------------


def mock_job(job_id: str, model: str) -> Job:
    return Job(
        job_id=job_id,
        model=model,
        kind="chat",
        messages=[ChatMessage(role="user", content="Tell me something.")],
        prompt=None,
        sampling=SamplingParams(max_tokens=64),
        deadline_ms=int((time.time() + 120) * 1000),
    )


async def start_node(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    log = (tmp_path / "node.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        shareai_executable(), "node", "run", *args, stdout=log, stderr=log, env=env
    )
    log.close()
    return process


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


@pytest.mark.asyncio
async def test_sigterm_drains_lets_the_running_job_finish_then_exits_0(tmp_path: Path) -> None:
    hub = FakeHub()
    await hub.start()
    Identity.generate().save(tmp_path / "node.key")
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        f"""
coordinator_url = "{hub.url}"
coordinator_key = "{hub.identity.public_key.to_text()}"
key_file = "node.key"
[agent]
drain_grace_s = 60
[[models]]
name = "mock/slow"
backend = "mock"
price_in_usd_per_1m = "0.1"
price_out_usd_per_1m = "0.2"
mock = {{ time_to_first_token_ms = 0, tokens_per_s = 5, output_tokens = 15 }}
"""
    )
    process = await start_node(tmp_path, "--config", str(config_path))
    try:
        side = await hub.next_side()
        await side.send(mock_job("job_term", "mock/slow"))
        await side.expect(JobAccepted)
        await side.expect(Chunk)  # the job runs; 14 tokens (about 3 s) are still to come

        process.send_signal(signal.SIGTERM)
        drain = await side.expect(Drain, skip=(Heartbeat, Chunk))
        assert drain.grace_ms == 60_000
        done = await side.expect(Done, skip=(Heartbeat, Chunk))
        assert done.finish_reason == "stop"
        assert done.usage.completion_tokens == 15
        assert await side.wait_closed() == 1001
        assert await asyncio.wait_for(process.wait(), WAIT_S) == 0
    finally:
        await stop(process)
        await hub.stop()
    log = (tmp_path / "node.log").read_text()
    assert "SIGTERM: draining" in log
    assert hub.sides.empty()  # it did not reconnect


@pytest.mark.asyncio
async def test_flags_form_trusts_the_coordinator_key_on_first_use_with_a_warning(
    tmp_path: Path,
) -> None:
    hub = FakeHub()
    await hub.start()
    key_file = tmp_path / "node.key"
    identity = Identity.generate()
    identity.save(key_file)
    process = await start_node(
        tmp_path, "--coordinator", hub.url, "--key-file", str(key_file),
        "--backend", "mock", "--model", "mock/fast", "--price-in", "0.5", "--price-out", "1.5",
        "--max-concurrency", "3",
    )  # fmt: skip
    try:
        side: HubSide = await hub.next_side()
        assert side.hello.node_key == identity.public_key.raw
        (offer,) = side.hello.offers
        assert (offer.model, offer.max_concurrency) == ("mock/fast", 3)
        assert offer.price_input_micro_usd_per_1m == 500_000
        assert offer.price_output_micro_usd_per_1m == 1_500_000
        process.send_signal(signal.SIGINT)
        assert await side.wait_closed() == 1001
        assert await asyncio.wait_for(process.wait(), WAIT_S) == 0
    finally:
        await stop(process)
        await hub.stop()
    log = (tmp_path / "node.log").read_text()
    assert f"trusting the coordinator key {hub.identity.public_key.to_text()}" in log


@pytest.mark.asyncio
async def test_a_revoked_node_exits_1_with_one_error_line(tmp_path: Path) -> None:
    hub = FakeHub(admission=lambda hello: ("revoked", "key revoked"))
    await hub.start()
    key_file = tmp_path / "node.key"
    Identity.generate().save(key_file)
    process = await start_node(
        tmp_path, "--coordinator", hub.url, "--key-file", str(key_file),
        "--coordinator-key", hub.identity.public_key.to_text(),
        "--backend", "mock", "--model", "m", "--price-in", "0", "--price-out", "0",
    )  # fmt: skip
    try:
        assert await asyncio.wait_for(process.wait(), WAIT_S) == 1
    finally:
        await stop(process)
        await hub.stop()
    errors = [
        line
        for line in (tmp_path / "node.log").read_text().splitlines()
        if line.startswith("shareai: error:")
    ]
    assert len(errors) == 1
    assert "revoked" in errors[0]
    assert "shareai node init --force" in errors[0]

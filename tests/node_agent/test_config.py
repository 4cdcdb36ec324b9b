"""node.toml: exact prices, defaults, and a one-line error naming the key for every bad value."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from node_agent import ConfigError, load_config, parse_usd_per_1m, render_node_toml
from node_agent.backends import backend_parameters, make_backend
from node_agent.config import hub_url_for
from protocol import KNOWN_PARAMETERS, Identity

COORDINATOR_KEY = Identity.from_seed(b"\x07" * 32).public_key.to_text()

HEADER = f"""
coordinator_url = "https://coordinator.example.com/"
coordinator_key = "{COORDINATOR_KEY}"
key_file = "keys/node.key"
"""

MOCK_MODEL = """
[[models]]
name = "mock/echo"
backend = "mock"
price_in_usd_per_1m = "0.10"
price_out_usd_per_1m = 0.3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_complete_file_loads_with_exact_prices_and_resolved_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + """
[agent]
reconnect_min_s = 2
reconnect_max_s = 30.5
drain_grace_s = 10

[[models]]
name = "meta-llama/Llama-3.1-8B-Instruct"
backend = "openai"
upstream_url = "http://127.0.0.1:8000/v1/"
upstream_model = "llama3.1:8b"
upstream_api_key_env = "UPSTREAM_KEY"
price_in_usd_per_1m = "0.05"
price_out_usd_per_1m = 0.000001
max_concurrency = 16
context_length = 131072
"""
        + MOCK_MODEL
        + "mock = { time_to_first_token_ms = 0, tokens_per_s = 1000 }\n",
    )
    config = load_config(path)
    assert config.coordinator_url == "https://coordinator.example.com"
    assert config.resolved_hub_url == "wss://coordinator.example.com/v1/hub"
    assert config.key_file == tmp_path / "keys" / "node.key"
    assert config.agent.reconnect_min_s == 2.0
    assert config.agent.reconnect_max_s == 30.5
    assert config.agent.drain_grace_s == 10.0
    served, mock = config.models
    assert served.price_input_micro_usd_per_1m == 50_000
    assert served.price_output_micro_usd_per_1m == 1
    assert served.upstream_url == "http://127.0.0.1:8000/v1"
    assert served.served_model == "llama3.1:8b"
    assert mock.price_input_micro_usd_per_1m == 100_000
    assert mock.price_output_micro_usd_per_1m == 300_000  # 0.3 read as a decimal, not a float
    assert mock.mock is not None
    assert mock.mock.tokens_per_s == 1000
    assert mock.max_concurrency == 4
    assert mock.context_length == 8192

    backend = served.backend_config({"UPSTREAM_KEY": "sk-upstream"})
    assert backend.kind == "openai"
    assert backend.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert backend.upstream_name == "llama3.1:8b"
    assert backend.api_key is not None
    assert backend.api_key.get_secret_value() == "sk-upstream"
    assert backend.offer(KNOWN_PARAMETERS).price_output_micro_usd_per_1m == 1
    with pytest.raises(ConfigError, match="UPSTREAM_KEY is not set"):
        served.backend_config({})


@pytest.mark.parametrize(
    ("value", "micro_usd"),
    [
        ("0", 0),
        ("1", 1_000_000),
        ("0.15", 150_000),
        ("12.345678", 12_345_678),
        ("0.000001", 1),
        (" 2.5 ", 2_500_000),
        (3, 3_000_000),
        (Decimal("0.10"), 100_000),
        (Decimal("1E-6"), 1),
        ("1000000", 10**12),
    ],
)
def test_prices_convert_exactly_to_micro_usd(value: object, micro_usd: int) -> None:
    assert parse_usd_per_1m(value) == micro_usd


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.0000001", "at most 6 decimals"),
        (Decimal("1E-7"), "at most 6 decimals"),
        ("0.1000000", "at most 6 decimals"),
        ("-1", "non-negative decimal"),
        ("1e3", "non-negative decimal"),
        ("", "non-negative decimal"),
        ("1,5", "non-negative decimal"),
        ("1000000.000001", "at most 1000000 USD"),
        (Decimal("Infinity"), "finite"),
        (0.1, "decimal string"),
        (True, "decimal string"),
        (None, "got a NoneType"),
    ],
)
def test_bad_prices_are_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_usd_per_1m(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HEADER.replace('"https://coordinator.example.com/"', '"ftp://x"') + MOCK_MODEL,
            "coordinator_url: the coordinator URL must be an http:// or https:// URL",
        ),
        (
            HEADER.replace(COORDINATOR_KEY, "ed25519:abc") + MOCK_MODEL,
            "coordinator_key: an Ed25519 public key is 32 bytes",
        ),
        (
            HEADER.replace('key_file = "keys/node.key"', "") + MOCK_MODEL,
            "key_file: missing (required)",
        ),
        (HEADER, "models: add at least one [[models]] entry"),
        (HEADER + MOCK_MODEL + "colour = 'blue'\n", "models[0].colour: unknown key"),
        (HEADER + "surprise = 1\n" + MOCK_MODEL, "surprise: unknown key"),
        (
            HEADER + MOCK_MODEL.replace('"0.10"', '"0.1234567"'),
            "models[0].price_in_usd_per_1m: at most 6 decimals",
        ),
        (
            HEADER + MOCK_MODEL.replace("0.3", "-0.3"),
            "models[0].price_out_usd_per_1m: a price is a non-negative decimal",
        ),
        (
            HEADER + MOCK_MODEL.replace('price_in_usd_per_1m = "0.10"\n', ""),
            "models[0].price_in_usd_per_1m: missing (required)",
        ),
        (
            HEADER + MOCK_MODEL.replace('"mock"', '"tgi"'),
            "models[0].backend: must be one of 'mock', 'openai' or 'vllm', got 'tgi'",
        ),
        (
            HEADER + MOCK_MODEL.replace('backend = "mock"', 'backend = "openai"'),
            'models[0].upstream_url: required for backend "openai"',
        ),
        (
            HEADER + MOCK_MODEL + 'upstream_url = "http://localhost:8000"\n',
            'models[0].upstream_url: not used by backend "mock"',
        ),
        (
            HEADER
            + MOCK_MODEL.replace('backend = "mock"', 'backend = "openai"')
            + 'upstream_url = "localhost:8000"\n',
            "models[0].upstream_url: the upstream URL must be an http:// or https:// URL",
        ),
        (
            HEADER + MOCK_MODEL + "max_concurrency = 0\n",
            "models[0].max_concurrency: input should be greater than or equal to 1, got 0",
        ),
        (
            HEADER + MOCK_MODEL + 'max_concurrency = "4"\n',
            "models[0].max_concurrency: input should be a valid integer, got '4'",
        ),
        (
            HEADER + MOCK_MODEL + "mock = { tokens_per_s = -1 }\n",
            "models[0].mock.tokens_per_s: input should be greater than or equal to 0",
        ),
        (
            HEADER + MOCK_MODEL + "vllm = { dtype = 'auto' }\n",
            'models[0].vllm: [models.vllm] engine arguments are for backend "vllm", not "mock"',
        ),
        (HEADER + MOCK_MODEL + MOCK_MODEL, "models: models[1].name 'mock/echo' repeats models[0]"),
        (
            HEADER + "[agent]\nreconnect_min_s = 10\nreconnect_max_s = 5\n" + MOCK_MODEL,
            "agent.reconnect_max_s: must be at least reconnect_min_s (10.0), got 5.0",
        ),
        (
            HEADER + "[agent]\nreconnect_min_s = 0\n" + MOCK_MODEL,
            "agent.reconnect_min_s: input should be greater than 0, got 0",
        ),
        (
            HEADER + MOCK_MODEL + 'supported_parameters = ["tools", "logit_bias"]\n',
            "models[0].supported_parameters[1]: must be one of 'max_tokens', 'temperature',"
            " 'top_p', 'stop', 'seed', 'presence_penalty', 'frequency_penalty', 'tools',"
            " 'tool_choice', 'parallel_tool_calls' or 'response_format', got 'logit_bias'",
        ),
        (
            HEADER + MOCK_MODEL + 'supported_parameters = ["seed", "tools", "seed"]\n',
            "models[0].supported_parameters: 'seed' is listed twice",
        ),
        (
            HEADER
            + MOCK_MODEL.replace('backend = "mock"', 'backend = "vllm"')
            + 'supported_parameters = ["seed", "tools"]\n',
            "models[0].supported_parameters: backend \"vllm\" does not support 'tools'"
            " (it supports frequency_penalty, max_tokens, presence_penalty, seed, stop,"
            " temperature, top_p)",
        ),
        (
            HEADER + MOCK_MODEL + 'supported_parameters = "tools"\n',
            "models[0].supported_parameters: input should be a valid list, got 'tools'",
        ),
        (HEADER + "models = 3\n", "models: input should be a valid list, got 3"),
        ('coordinator_url = "http://x"\n[[models]\n', "not valid TOML"),
    ],
)
def test_every_bad_value_gives_one_line_naming_its_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.asyncio
async def test_supported_parameters_narrow_the_offer_of_any_backend(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + MOCK_MODEL
        + 'supported_parameters = ["stop", "max_tokens", "tools"]\n'
        + MOCK_MODEL.replace("mock/echo", "mock/all")
        + MOCK_MODEL.replace("mock/echo", "mock/none")
        + "supported_parameters = []\n"
        + """
[[models]]
name = "llama"
backend = "openai"
upstream_url = "http://127.0.0.1:9/v1"
price_in_usd_per_1m = "0"
price_out_usd_per_1m = "0"
supported_parameters = ["seed"]
""",
    )
    offered: dict[str, list[str]] = {}
    for model in load_config(path).models:
        backend = make_backend(model.backend_config())
        try:
            (offer,) = backend.offers()
            offered[offer.model] = list(offer.supported_parameters)
        finally:
            await backend.aclose()
    assert offered == {
        "mock/echo": ["max_tokens", "stop", "tools"],
        "mock/all": sorted(backend_parameters("mock")),
        "mock/none": [],
        "llama": ["seed"],
    }


def test_each_backend_kind_declares_what_it_supports() -> None:
    assert backend_parameters("mock") == KNOWN_PARAMETERS
    assert backend_parameters("openai") == KNOWN_PARAMETERS
    assert KNOWN_PARAMETERS - backend_parameters("vllm") == {
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }


def test_a_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file .*shareai node init"):
        load_config(tmp_path / "absent.toml")


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "coordinator_url = 1\n")
    with pytest.raises(ConfigError, match=r"\(and 3 more problems\)$"):
        load_config(path)


def test_hub_url_follows_the_coordinator_scheme_host_and_path() -> None:
    assert hub_url_for("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/hub"
    assert hub_url_for("https://example.com/shareai") == "wss://example.com/shareai/v1/hub"
    assert hub_url_for("https://example.com", "/hub") == "wss://example.com/hub"


def test_the_init_skeleton_parses_and_its_model_entry_loads(tmp_path: Path) -> None:
    key = Identity.generate().public_key
    skeleton = render_node_toml(
        coordinator_url="http://127.0.0.1:9000",
        coordinator_key=key,
        key_file="node.key",
        node_id="nd_test",
    )
    assert tomllib.loads(skeleton)["coordinator_key"] == key.to_text()
    assert key.coordinator_id in skeleton
    with pytest.raises(ConfigError, match="add at least one"):
        load_config(write(tmp_path, skeleton))
    # A Provider (or a script) adds a model by appending an entry.
    assert load_config(write(tmp_path, skeleton + MOCK_MODEL)).models[0].name == "mock/echo"

    with_model = render_node_toml(
        coordinator_url="http://127.0.0.1:9000",
        coordinator_key=key,
        key_file="node.key",
        node_id="nd_test",
        model={"name": 'odd "name"', "backend": "mock", "price_in_usd_per_1m": "0.5",
               "price_out_usd_per_1m": "1", "max_concurrency": 2, "upstream_model": None},
    )  # fmt: skip
    config = load_config(write(tmp_path, with_model))
    assert config.coordinator_public_key == key
    assert config.key_file == tmp_path / "node.key"
    (model,) = config.models
    assert (model.name, model.max_concurrency) == ('odd "name"', 2)
    assert model.price_input_micro_usd_per_1m == 500_000

    # The commented examples are valid entries once uncommented.
    examples = "\n".join(
        line.removeprefix("# ")
        for line in skeleton.splitlines()
        if line.startswith(("# [[ models ]]", "# name", "# backend", "# upstream_url", "# price",
                            "# max_conc", "# context", "# upstream_model", "# mock"))
    )  # fmt: skip
    config = load_config(write(tmp_path, skeleton + "\n" + examples))
    assert [m.backend for m in config.models] == ["openai", "mock"]

"""The node's configuration file, ``node.toml``, as frozen pydantic models.

``shareai node init`` writes one (see :func:`render_node_toml`); a complete example::

    coordinator_url = "https://coordinator.example.com"
    # Pinned like an SSH host key: the agent refuses a coordinator presenting any other key.
    coordinator_key = "ed25519:A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
    key_file = "node.key"                # relative paths are relative to this file's folder

    [agent]                              # every key optional; these are the defaults
    reconnect_min_s = 1.0                # reconnect backoff: full jitter between 0 and a
    reconnect_max_s = 60.0               #   ceiling doubling from min up to max
    backoff_reset_after_s = 30.0         # a session up this long resets the backoff
    drain_grace_s = 30.0                 # on SIGTERM: how long running jobs may finish
    connect_timeout_s = 10.0
    unknown_node_retries = 5             # "unknown node" right after enrolling may be a race

    [[models]]
    name = "meta-llama/Llama-3.1-8B-Instruct"   # the name customers ask for
    backend = "openai"                   # mock | openai | vllm
    upstream_url = "http://127.0.0.1:8000/v1"
    upstream_model = "llama3.1:8b"       # the upstream's name for it (default: name)
    upstream_api_key_env = "UPSTREAM_API_KEY"   # environment variable holding its key, if any
    price_in_usd_per_1m = "0.05"         # USD per 1M input tokens: exact, at most 6 decimals
    price_out_usd_per_1m = "0.15"
    max_concurrency = 16
    context_length = 131072
    # The request parameters to offer, if the upstream honours fewer than all (the default).
    supported_parameters = ["max_tokens", "temperature", "top_p", "stop", "seed"]

    [[models]]
    name = "mock/echo"
    backend = "mock"
    price_in_usd_per_1m = 0
    price_out_usd_per_1m = 0
    mock = { time_to_first_token_ms = 50, tokens_per_s = 200 }

``mock`` and ``vllm`` take the options of :class:`node_agent.backends.config.MockOptions` and
:class:`~node_agent.backends.config.VllmOptions`. ``supported_parameters`` (any backend) narrows
the request parameters the model's offer lists; each must be one the backend supports
(:func:`node_agent.backends.backend_parameters`), and by default the offer lists them all.
Prices are read as decimals, never floats (TOML numbers are parsed as :class:`decimal.Decimal`),
and kept as integer micro-USD per 1M tokens. Every bad value raises :class:`ConfigError` with one
line naming the key, such as ``node.toml: models[1].price_in_usd_per_1m: at most 6 decimals``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from node_agent.backends import backend_parameters
from node_agent.backends.config import BackendConfig, BackendKind, MockOptions, VllmOptions
from node_agent.errors import ConfigError
from protocol import PublicKey, RequestParameter

__all__ = [
    "DEFAULT_HUB_PATH",
    "MAX_PRICE_MICRO_USD_PER_1M",
    "AgentOptions",
    "BackendKind",
    "ModelConfig",
    "NodeConfig",
    "build_config",
    "hub_url_for",
    "load_config",
    "parse_usd_per_1m",
    "render_node_toml",
]

DEFAULT_HUB_PATH = "/v1/hub"
MAX_PRICE_MICRO_USD_PER_1M = 10**12  # the protocol's bound on an offer's price
_MICRO_USD_DECIMALS = 6
_MICRO_USD_PER_USD = 1_000_000
_USD_TEXT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_usd_per_1m(value: object) -> int:
    """A price in USD per 1M tokens (``"0.15"``, ``2``, a TOML decimal) as integer micro-USD.

    Exact: refuses floats (use a string or a TOML number), negatives, exponents, more than 6
    decimals and more than the protocol's maximum. Raises ValueError with a message for people.
    """
    # ValueError, not TypeError, throughout: pydantic reports only ValueErrors as field errors.
    if isinstance(value, bool | float):
        raise ValueError(f'write the price as a decimal string such as "0.15", got {value!r}')  # noqa: TRY004
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"a price must be a finite number, got {value}")
        # format(..., "f") keeps the decimals as written ("0.10" stays "0.10"), never an exponent.
        text = format(value, "f")
    elif isinstance(value, str):
        text = value.strip()
    else:
        kind = type(value).__name__
        raise ValueError(f'a price is a decimal string such as "0.15", got a {kind}')  # noqa: TRY004
    match = _USD_TEXT.fullmatch(text)
    if match is None:
        raise ValueError(
            f'a price is a non-negative decimal number of USD such as "0.15", got {text!r}'
        )
    fraction = match["fraction"] or ""
    if len(fraction) > _MICRO_USD_DECIMALS:
        raise ValueError(f"at most 6 decimals (1 micro-USD is 0.000001), got {text!r}")
    micro_usd = int(match["whole"]) * _MICRO_USD_PER_USD + int(
        fraction.ljust(_MICRO_USD_DECIMALS, "0")
    )
    if micro_usd > MAX_PRICE_MICRO_USD_PER_1M:
        raise ValueError(f"at most 1000000 USD per 1M tokens, got {text!r}")
    return micro_usd


def _http_url(value: object, *, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")  # noqa: TRY004 - a pydantic field error
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not have a query or fragment, got {value!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"{what} has an invalid port: {value!r}") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def hub_url_for(coordinator_url: str, hub_path: str = DEFAULT_HUB_PATH) -> str:
    """The websocket URL of the node hub: same host, ``http``->``ws``, ``https``->``wss``."""
    parts = urlsplit(coordinator_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + hub_path, "", ""))


class _ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AgentOptions(_ConfigModel):
    """The session loop's tunables. The heartbeat interval comes from the coordinator."""

    reconnect_min_s: float = Field(default=1.0, gt=0, le=3_600, allow_inf_nan=False)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=86_400, allow_inf_nan=False)
    backoff_reset_after_s: float = Field(default=30.0, ge=0, le=86_400, allow_inf_nan=False)
    drain_grace_s: float = Field(default=30.0, ge=0, le=86_400, allow_inf_nan=False)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600, allow_inf_nan=False)
    unknown_node_retries: int = Field(default=5, ge=0, le=1_000)

    @field_validator("reconnect_max_s")
    @classmethod
    def _max_not_below_min(cls, value: float, info: ValidationInfo) -> float:
        minimum = info.data.get("reconnect_min_s")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least reconnect_min_s ({minimum}), got {value}")
        return value


class ModelConfig(_ConfigModel):
    """One ``[[models]]`` entry: a model this node serves, through which backend, at what price.

    ``upstream_model`` is the model's name at the upstream server (``openai``) or the weights to
    load (``vllm``: a Hugging Face id or a local path); it defaults to ``name``.
    """

    name: str = Field(min_length=1, max_length=256)
    backend: BackendKind
    price_input_micro_usd_per_1m: int = Field(alias="price_in_usd_per_1m", ge=0)
    price_output_micro_usd_per_1m: int = Field(alias="price_out_usd_per_1m", ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=4096)
    context_length: int = Field(default=8192, ge=1, le=100_000_000)
    weights_hash: str | None = Field(default=None, min_length=1, max_length=128)
    upstream_url: str | None = Field(default=None, validate_default=True)
    upstream_model: str | None = Field(
        default=None, min_length=1, max_length=256, validate_default=True
    )
    upstream_api_key_env: str | None = Field(default=None, validate_default=True)
    supported_parameters: list[RequestParameter] | None = None
    """The request parameters to offer (``None``: all the backend supports)."""
    mock: MockOptions | None = Field(default=None, validate_default=True)
    vllm: VllmOptions | None = Field(default=None, validate_default=True)

    @field_validator("price_input_micro_usd_per_1m", "price_output_micro_usd_per_1m", mode="before")
    @classmethod
    def _exact_price(cls, value: object) -> int:
        return parse_usd_per_1m(value)

    @field_validator("upstream_url")
    @classmethod
    def _upstream_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        backend = info.data.get("backend")
        if value is None:
            if backend == "openai":
                raise ValueError('required for backend "openai" (the server\'s /v1 base URL)')
            return None
        if backend in ("mock", "vllm"):
            raise ValueError(f'not used by backend "{backend}"; remove it')
        return _http_url(value, what="the upstream URL")

    @field_validator("upstream_model")
    @classmethod
    def _upstream_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("backend") == "mock":
            raise ValueError('not used by backend "mock"; remove it')
        return value

    @field_validator("upstream_api_key_env")
    @classmethod
    def _api_key_env(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        backend = info.data.get("backend")
        if backend is not None and backend != "openai":
            raise ValueError(f'not used by backend "{backend}"; remove it')
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(f"must name an environment variable, got {value!r}")
        return value

    @field_validator("supported_parameters")
    @classmethod
    def _parameters_the_backend_supports(
        cls, value: list[RequestParameter] | None, info: ValidationInfo
    ) -> list[RequestParameter] | None:
        if value is None:
            return None
        backend = info.data.get("backend")
        supported = backend_parameters(backend) if backend is not None else None
        for index, name in enumerate(value):
            if name in value[:index]:
                raise ValueError(f"{name!r} is listed twice")
            if supported is not None and name not in supported:
                raise ValueError(
                    f'backend "{backend}" does not support {name!r}'
                    f" (it supports {', '.join(sorted(supported))})"
                )
        return value

    @field_validator("mock")
    @classmethod
    def _mock_only_for_mock(
        cls, value: MockOptions | None, info: ValidationInfo
    ) -> MockOptions | None:
        backend = info.data.get("backend")
        if value is not None and backend is not None and backend != "mock":
            raise ValueError(f'[models.mock] options are for backend "mock", not "{backend}"')
        if value is None and backend == "mock":
            return MockOptions()
        return value

    @field_validator("vllm")
    @classmethod
    def _vllm_only_for_vllm(
        cls, value: VllmOptions | None, info: ValidationInfo
    ) -> VllmOptions | None:
        backend = info.data.get("backend")
        if value is not None and backend is not None and backend != "vllm":
            raise ValueError(
                f'[models.vllm] engine arguments are for backend "vllm", not "{backend}"'
            )
        if value is None and backend == "vllm":
            return VllmOptions()
        return value

    @property
    def served_model(self) -> str:
        """The upstream's name for the model (``upstream_model``, else ``name``)."""
        return self.upstream_model or self.name

    def backend_config(self, environ: Mapping[str, str] | None = None) -> BackendConfig:
        """What :func:`node_agent.backends.make_backend` needs to serve this entry.

        Reads the upstream's API key from ``upstream_api_key_env`` in ``environ`` (default: this
        process's environment). Raises ConfigError when that variable is not set.
        """
        api_key: SecretStr | None = None
        if self.upstream_api_key_env is not None:
            value = (os.environ if environ is None else environ).get(self.upstream_api_key_env)
            if not value:
                raise ConfigError(
                    f"model {self.name!r}: upstream_api_key_env: the environment variable"
                    f" {self.upstream_api_key_env} is not set"
                )
            api_key = SecretStr(value)
        try:
            return self._backend_config(api_key)
        except ValidationError as error:
            line = _error_line(error.errors()[0], lambda key: key)
            raise ConfigError(f"model {self.name!r}: {line}") from None

    def _backend_config(self, api_key: SecretStr | None) -> BackendConfig:
        return BackendConfig(
            kind=self.backend,
            model=self.name,
            upstream_model=self.upstream_model,
            base_url=self.upstream_url,
            api_key=api_key,
            weights_hash=self.weights_hash,
            context_length=self.context_length,
            max_concurrency=self.max_concurrency,
            price_input_micro_usd_per_1m=self.price_input_micro_usd_per_1m,
            price_output_micro_usd_per_1m=self.price_output_micro_usd_per_1m,
            supported_parameters=(
                None if self.supported_parameters is None else frozenset(self.supported_parameters)
            ),
            mock=self.mock or MockOptions(),
            vllm=self.vllm or VllmOptions(),
        )


class NodeConfig(_ConfigModel):
    """The whole ``node.toml``. ``key_file`` is absolute once loaded by :func:`load_config`."""

    coordinator_url: str
    coordinator_key: str
    key_file: Path
    hub_url: str | None = None
    agent: AgentOptions = AgentOptions()
    models: list[ModelConfig] = Field(min_length=1, max_length=256)

    @field_validator("coordinator_url", mode="before")
    @classmethod
    def _coordinator_url(cls, value: object) -> str:
        return _http_url(value, what="the coordinator URL")

    @field_validator("coordinator_key")
    @classmethod
    def _pinned_key(cls, value: str) -> str:
        try:
            PublicKey.from_text(value)
        except ValueError as error:
            raise ValueError(
                f"{error} (expected ed25519:... as printed by shareai node init)"
            ) from None
        return value

    @field_validator("key_file", mode="before")
    @classmethod
    def _key_file(cls, value: object, info: ValidationInfo) -> Path:
        if not isinstance(value, str | Path) or not str(value).strip():
            raise ValueError("must be the path of the node's private key file")
        path = Path(value).expanduser()
        base = info.context.get("base_dir") if isinstance(info.context, dict) else None
        if not path.is_absolute() and isinstance(base, Path):
            path = base / path
        return path

    @field_validator("hub_url")
    @classmethod
    def _hub_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"must be a ws:// or wss:// URL with a host, got {value!r}")
        return value

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[ModelConfig]) -> list[ModelConfig]:
        first_index: dict[str, int] = {}
        for index, model in enumerate(value):
            if model.name in first_index:
                raise ValueError(
                    f"models[{index}].name {model.name!r} repeats models[{first_index[model.name]}]"
                )
            first_index[model.name] = index
        return value

    @property
    def coordinator_public_key(self) -> PublicKey:
        return PublicKey.from_text(self.coordinator_key)

    @property
    def resolved_hub_url(self) -> str:
        """``hub_url`` if set, else derived from ``coordinator_url`` (see :func:`hub_url_for`)."""
        return self.hub_url or hub_url_for(self.coordinator_url)


def _key_path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _error_line(error: Mapping[str, Any], label: Callable[[str], str]) -> str:
    key = label(_key_path(tuple(error["loc"])))
    kind = error["type"]
    if key == "models" and kind in ("missing", "too_short"):
        message = "add at least one [[models]] entry (see the commented examples)"
    elif kind == "missing":
        message = "missing (required)"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "value_error":
        message = str(error["ctx"]["error"])
    elif kind == "literal_error":
        message = f"must be one of {error['ctx']['expected']}, got {error['input']!r}"
    else:
        message = f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {error['input']!r}"
    return f"{key}: {message}" if key else message


def build_config(
    data: Mapping[str, Any],
    *,
    source: str,
    base_dir: Path | None = None,
    label: Callable[[str], str] | None = None,
) -> NodeConfig:
    """Validate a parsed configuration; ConfigError ``"{source}: {key}: {problem}"`` if bad.

    ``label`` renames keys in messages (the command line names its flags instead of keys).
    """
    try:
        return NodeConfig.model_validate(dict(data), context={"base_dir": base_dir})
    except ValidationError as error:
        errors = error.errors()
        line = _error_line(errors[0], label or (lambda key: key))
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise ConfigError(f"{source}: {line}{more if len(errors) > 1 else ''}") from None


def load_config(path: Path) -> NodeConfig:
    """Read and validate ``node.toml``. Raises ConfigError (one line naming the key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one with: shareai node init)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return build_config(data, source=str(path), base_dir=path.resolve().parent)


def _toml_string(text: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes), without ensure_ascii noise.
    return json.dumps(text, ensure_ascii=False)


def render_node_toml(
    *,
    coordinator_url: str,
    coordinator_key: PublicKey,
    key_file: str,
    node_id: str,
    hub_url: str | None = None,
    model: Mapping[str, object] | None = None,
) -> str:
    """The ``node.toml`` that ``shareai node init`` writes.

    ``model`` (``[[models]]`` keys to values) becomes a live entry; without it the file holds
    commented examples, and ``shareai node run`` asks for a model until one is uncommented.
    """
    lines = [
        f"# ShareAI node {node_id}: written by `shareai node init`.",
        "",
        f"coordinator_url = {_toml_string(coordinator_url)}",
        "# The coordinator's key, pinned on first use (like an SSH host key): compare it with",
        "# the key your coordinator's operator publishes. The agent refuses any other key.",
        f"# Coordinator id: {coordinator_key.coordinator_id}",
        f"coordinator_key = {_toml_string(coordinator_key.to_text())}",
        f"key_file = {_toml_string(key_file)}",
    ]
    if hub_url is not None:
        lines.append(f"hub_url = {_toml_string(hub_url)}")
    lines += [
        "",
        "[agent]",
        "# reconnect_min_s = 1.0",
        "# reconnect_max_s = 60.0",
        "# drain_grace_s = 30.0        # on SIGTERM, running jobs may finish for this long",
        "",
    ]
    if model is not None:
        lines.append("[[models]]")
        lines += [
            f"{key} = {_toml_string(value) if isinstance(value, str) else value}"
            for key, value in model.items()
            if value is not None
        ]
        lines.append("")
    lines += [
        "# Each models entry is one model this node serves (uncomment an example to use it).",
        "# Prices are USD per 1M tokens, written as decimal strings (at most 6 decimals).",
        "#",
        "# [[ models ]]",
        '# name = "meta-llama/Llama-3.1-8B-Instruct"    # the name customers ask for',
        '# backend = "openai"                           # any OpenAI-compatible server',
        '# upstream_url = "http://127.0.0.1:8000/v1"',
        '# upstream_model = "meta-llama/Llama-3.1-8B-Instruct"',
        '# # upstream_api_key_env = "UPSTREAM_API_KEY"  # env variable holding its key',
        '# price_in_usd_per_1m = "0.05"',
        '# price_out_usd_per_1m = "0.15"',
        "# max_concurrency = 16",
        "# context_length = 131072",
        "# # Offer fewer request parameters than all (the default) if the upstream lacks some:",
        '# # supported_parameters = ["max_tokens", "temperature", "top_p", "stop", "seed"]',
        "#",
        "# [[ models ]]",
        '# name = "mock/echo"                           # deterministic text, for trying it out',
        '# backend = "mock"',
        '# price_in_usd_per_1m = "0"',
        '# price_out_usd_per_1m = "0"',
        "# mock = { time_to_first_token_ms = 50, tokens_per_s = 200 }",
        "",
    ]
    return "\n".join(lines)

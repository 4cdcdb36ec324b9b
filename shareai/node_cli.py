"""``shareai node``: enroll this machine as a Provider node, and run it.

::

    shareai node init --coordinator URL (--api-key PROVIDER_KEY | --enroll-token TOKEN)
                      [--key-file PATH] [--config PATH] [--force] [model flags]
    shareai node run [--config node.toml]
    shareai node run --coordinator URL --key-file PATH [--coordinator-key ed25519:...] model flags

Model flags: ``--backend mock|openai|vllm --model NAME --price-in USD_PER_1M --price-out
USD_PER_1M [--upstream-url URL] [--upstream-model NAME] [--max-concurrency N]
[--context-length N]``.

Errors are one line on stderr: exit 2 for a bad command line (flag values included), 1 for a
failure (unreachable coordinator, refused key, bad node.toml, a node refused for good).
``shareai node run`` exits 0 after SIGTERM or SIGINT once running jobs finished (a second signal
cancels them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from node_agent import NodeAgent, NodeConfig
    from protocol import Identity

# The node agent (websockets, httpx, pydantic, the backends) is imported when a node command
# runs, not when the command line is built: `shareai --help` stays fast.
# ruff: noqa: PLC0415

__all__ = ["register"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)
_API_KEY_ENV = "SHAREAI_API_KEY"
_ENROLL_TOKEN_PREFIX = "sai-enroll-"  # noqa: S105 - what a one-time enrollment token starts with
_BAD_ARGUMENTS = 2
_FAILED = 1
logger = logging.getLogger("shareai.node")

# The model flags and the node.toml keys they fill (for error messages naming the flag).
_MODEL_FLAGS = {
    "backend": "--backend",
    "name": "--model",
    "price_in_usd_per_1m": "--price-in",
    "price_out_usd_per_1m": "--price-out",
    "upstream_url": "--upstream-url",
    "upstream_model": "--upstream-model",
    "max_concurrency": "--max-concurrency",
    "context_length": "--context-length",
}


_MODEL_FLAG_DESTS = (
    "backend",
    "model",
    "price_in",
    "price_out",
    "upstream_url",
    "upstream_model",
    "max_concurrency",
    "context_length",
)


class _BadArguments(Exception):
    """A command-line value is wrong (exit 2)."""


def register(subparsers: argparse._SubParsersAction[_P]) -> None:
    """Add the ``node`` command group to the ``shareai`` command line."""
    node = subparsers.add_parser(
        "node",
        help="enroll and run a Provider node",
        description="Enroll this machine as a node of a ShareAI coordinator and serve models.",
    )
    commands = node.add_subparsers(dest="node_command", required=True, metavar="{init,run}")

    init = commands.add_parser(
        "init",
        help="create a node key, pin the coordinator's key, enroll, write node.toml",
        description="Create this node's Ed25519 key (mode 0600), fetch and pin the"
        " coordinator's key (trust on first use: compare the printed key with the one the"
        " coordinator's operator publishes), enroll the key under your Provider account and"
        " write node.toml. With model flags, node.toml gets that model; otherwise it holds"
        " commented examples.",
    )
    init.add_argument("--coordinator", required=True, metavar="URL", help="the coordinator URL")
    init.add_argument(
        "--api-key",
        metavar="PROVIDER_KEY",
        help=f"your Provider API key (default: the {_API_KEY_ENV} environment variable)",
    )
    init.add_argument(
        "--enroll-token",
        metavar="TOKEN",
        help="a one-time enrollment token from the Provider console (sai-enroll-...), instead"
        " of an API key: your key never goes onto this machine",
    )
    init.add_argument(
        "--config", type=Path, default=Path("node.toml"), help="where to write node.toml"
    )
    init.add_argument(
        "--key-file", type=Path, help="where to write the node key (default: node.key beside it)"
    )
    init.add_argument(
        "--force", action="store_true", help="replace an existing key file and node.toml"
    )
    _add_model_flags(init, required=False)
    init.set_defaults(handler=_guarded(_node_init))

    run = commands.add_parser(
        "run",
        help="connect to the coordinator and serve jobs until stopped",
        description="Serve the models of node.toml (or of the flags) until SIGTERM or SIGINT:"
        " then take no new jobs, let running ones finish and exit 0.",
    )
    run.add_argument(
        "--config",
        type=Path,
        help="the node's configuration (default: node.toml, unless --coordinator is given)",
    )
    run.add_argument("--coordinator", metavar="URL", help="the coordinator URL (flags form)")
    run.add_argument("--key-file", type=Path, help="the node key (flags form)")
    run.add_argument(
        "--coordinator-key",
        metavar="ed25519:...",
        help="the coordinator's pinned key (flags form; fetched on first use if omitted)",
    )
    _add_model_flags(run, required=False)
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    run.set_defaults(handler=_guarded(_node_run))


def _add_model_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group("model (one [[models]] entry)")
    group.add_argument("--backend", choices=("mock", "openai", "vllm"), required=required)
    group.add_argument("--model", metavar="NAME", help="the model name customers ask for")
    group.add_argument("--price-in", metavar="USD_PER_1M", help="price per 1M input tokens")
    group.add_argument("--price-out", metavar="USD_PER_1M", help="price per 1M output tokens")
    group.add_argument("--upstream-url", metavar="URL", help="openai: the server's /v1 URL")
    group.add_argument("--upstream-model", metavar="NAME", help="the upstream's name for it")
    group.add_argument("--max-concurrency", type=int, metavar="N")
    group.add_argument("--context-length", type=int, metavar="N")


def _any_model_flag(args: argparse.Namespace) -> bool:
    return any(getattr(args, dest) is not None for dest in _MODEL_FLAG_DESTS)


def _model_entry(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``[[models]]`` entry the flags describe; None when no model flag was given."""
    values: dict[str, Any] = {
        "name": args.model,
        "backend": args.backend,
        "upstream_url": args.upstream_url,
        "upstream_model": args.upstream_model,
        "price_in_usd_per_1m": args.price_in,
        "price_out_usd_per_1m": args.price_out,
        "max_concurrency": args.max_concurrency,
        "context_length": args.context_length,
    }
    if not _any_model_flag(args):
        return None
    for key in ("name", "backend", "price_in_usd_per_1m", "price_out_usd_per_1m"):
        if values[key] is None:
            raise _BadArguments(f"{_MODEL_FLAGS[key]} is required to describe a model")
    return {key: value for key, value in values.items() if value is not None}


def _flag_label(key: str) -> str:
    field = key.rpartition(".")[2]
    if key.startswith("models[") and field in _MODEL_FLAGS:
        return _MODEL_FLAGS[field]
    return {"coordinator_url": "--coordinator", "coordinator_key": "--coordinator-key"}.get(
        key, key
    )


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``handler``; turn the errors a Provider can cause into one line and an exit code."""

    def run(args: argparse.Namespace) -> int:
        from node_agent import NodeAgentError
        from protocol import KeyFileError

        try:
            code: int = handler(args)
        except _BadArguments as error:
            _error(str(error))
            return _BAD_ARGUMENTS
        except (NodeAgentError, KeyFileError, ImportError) as error:
            _error(str(error))
            return _FAILED
        except OSError as error:
            _error(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))
            return _FAILED
        return code

    return run


def _error(message: str) -> None:
    print(f"shareai: error: {message}", file=sys.stderr)


# -- shareai node init ---------------------------------------------------------------------------


def _node_init(args: argparse.Namespace) -> int:
    from node_agent import NodeAgentError, hub_url_for, render_node_toml
    from node_agent.config import DEFAULT_HUB_PATH
    from node_agent.enrollment import (
        enroll_node,
        fetch_account_id,
        fetch_hub_info,
        fetch_token_account_id,
        new_client,
    )
    from protocol import Identity

    credential, is_token = _enrollment_credential(args)
    model = _model_entry(args)
    config_path: Path = args.config
    key_file: Path = args.key_file or config_path.parent / "node.key"
    for path in (key_file, config_path):
        if path.exists() and not args.force:
            raise NodeAgentError(f"{path} already exists; pass --force to replace it")
    # Check the URL and the model flags before any network call (with a placeholder key).
    checked_url = _flags_config(
        args.coordinator, _placeholder_key(), key_file, model
    ).coordinator_url

    identity = Identity.generate()
    with new_client() as client:
        info = fetch_hub_info(client, checked_url)
        if is_token:
            account_id = fetch_token_account_id(client, checked_url, credential)
        else:
            account_id = fetch_account_id(client, checked_url, credential)
        enrollment = enroll_node(
            client,
            checked_url,
            credential,
            identity=identity,
            coordinator_key=info.coordinator_key,
            account_id=account_id,
        )
    # Written only now: a failed enrollment leaves nothing behind to clean up.
    identity.save(key_file, overwrite=args.force)
    hub_url = None
    if info.hub_path != DEFAULT_HUB_PATH:
        hub_url = hub_url_for(checked_url, info.hub_path)
    text = render_node_toml(
        coordinator_url=checked_url,
        coordinator_key=info.coordinator_key,
        key_file=_relative_to(key_file, config_path.parent),
        node_id=enrollment.node_id,
        hub_url=hub_url,
        model=model,
    )
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text, encoding="utf-8")
    print(f"node id          {enrollment.node_id}")
    print(f"node key         {key_file} (mode 0600)")
    print(f"account          {enrollment.account_id}")
    print(f"coordinator key  {info.coordinator_key.to_text()} ({info.coordinator_id})")
    print("                 pinned on first use: compare it with the key the operator publishes")
    print(f"config           {config_path}")
    if model is None:
        print(f"next: add a [[models]] entry to {config_path}, then: shareai node run")
    else:
        print(f"next: shareai node run --config {config_path}")
    return 0


def _enrollment_credential(args: argparse.Namespace) -> tuple[str, bool]:
    """What authorises the enrollment: (a Provider API key, False) or (a token, True)."""
    if args.api_key is not None and args.enroll_token is not None:
        raise _BadArguments("give either --api-key or --enroll-token, not both")
    if args.enroll_token is not None:
        token = args.enroll_token.strip()
        if not token.startswith(_ENROLL_TOKEN_PREFIX):
            raise _BadArguments(
                f"--enroll-token: not an enrollment token (those start with {_ENROLL_TOKEN_PREFIX};"
                " an API key goes in --api-key)"
            )
        return token, True
    api_key = (args.api_key or os.environ.get(_API_KEY_ENV) or "").strip()
    if not api_key:
        raise _BadArguments(
            f"--api-key or --enroll-token is required (or set {_API_KEY_ENV} to your Provider key)"
        )
    if api_key.startswith(_ENROLL_TOKEN_PREFIX):
        raise _BadArguments(
            "that is an enrollment token, not an API key: pass it with --enroll-token"
        )
    return api_key, False


def _placeholder_key() -> str:
    from protocol import Identity

    return Identity.from_seed(bytes(32)).public_key.to_text()


def _relative_to(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


# -- shareai node run ----------------------------------------------------------------------------


def _node_run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.root.level))
    from protocol import Identity

    config = _run_config(args)
    identity = Identity.load(config.key_file)
    return asyncio.run(_serve(config, identity))


def _run_config(args: argparse.Namespace) -> NodeConfig:
    from node_agent import load_config
    from node_agent.enrollment import fetch_hub_info, new_client

    flags_form = args.coordinator is not None
    if args.config is not None and flags_form:
        raise _BadArguments("give either --config or --coordinator with model flags, not both")
    if not flags_form:
        stray = [flag for flag in ("key_file", "coordinator_key") if getattr(args, flag)]
        if stray or _any_model_flag(args):
            raise _BadArguments("model flags, --key-file and --coordinator-key need --coordinator")
        return load_config(args.config or Path("node.toml"))
    if args.key_file is None:
        raise _BadArguments("--key-file is required with --coordinator")
    model = _model_entry(args)
    if model is None:
        raise _BadArguments("--backend, --model, --price-in and --price-out are required")
    coordinator_key = args.coordinator_key
    if coordinator_key is None:
        # Validate the URL (and the model) before trusting anything it serves.
        checked = _flags_config(args.coordinator, _placeholder_key(), args.key_file, model)
        with new_client() as client:
            info = fetch_hub_info(client, checked.coordinator_url)
        coordinator_key = info.coordinator_key.to_text()
        print(
            f"shareai: warning: trusting the coordinator key {coordinator_key}"
            f" ({info.coordinator_id}) on first use; pass --coordinator-key to pin it",
            file=sys.stderr,
        )
    return _flags_config(args.coordinator, coordinator_key, args.key_file, model)


def _flags_config(
    coordinator: str, coordinator_key: str, key_file: Path, model: dict[str, Any] | None
) -> NodeConfig:
    from node_agent import NodeAgentError, build_config

    data: dict[str, Any] = {
        "coordinator_url": coordinator,
        "coordinator_key": coordinator_key,
        "key_file": str(key_file),
        # Without a model (init's URL check) a placeholder keeps the config valid.
        "models": [
            model
            or {
                "name": "placeholder",
                "backend": "mock",
                "price_in_usd_per_1m": "0",
                "price_out_usd_per_1m": "0",
            }
        ],
    }
    try:
        return build_config(data, source="shareai", base_dir=Path.cwd(), label=_flag_label)
    except NodeAgentError as error:
        raise _BadArguments(str(error).removeprefix("shareai: ")) from None


async def _serve(config: NodeConfig, identity: Identity) -> int:
    from node_agent import AgentStopped, NodeAgent
    from node_agent.backends import InferenceBackend, make_backend

    loop = asyncio.get_running_loop()
    backends: list[InferenceBackend] = []
    try:
        for model in config.models:
            # One at a time, so those already built are closed if a later one fails.
            backends.append(make_backend(model.backend_config()))  # noqa: PERF401
        agent = NodeAgent.from_config(config, identity, backends)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _on_signal, agent, signum)
        logger.info(
            "node %s serving %s", agent.node_id, ", ".join(model.name for model in config.models)
        )
        try:
            await agent.run()
        except AgentStopped as error:
            _error(str(error))
            return _FAILED
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for backend in backends:
            with contextlib.suppress(Exception):
                await backend.aclose()


def _on_signal(agent: NodeAgent, signum: int) -> None:
    logger.info("%s: draining (send it again to stop at once)", signal.Signals(signum).name)
    agent.request_shutdown()

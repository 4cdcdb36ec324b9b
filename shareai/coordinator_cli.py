"""``shareai coordinator``: serve the customer API and the node hub."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TypeVar

__all__ = ["register"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)


def register(subparsers: argparse._SubParsersAction[_ParserT]) -> None:
    """Add the ``coordinator`` command to the ``shareai`` command's subparsers."""
    command = subparsers.add_parser(
        "coordinator",
        help="serve the OpenAI-compatible API and the node hub",
        description="Serve the customer API and the node hub. The database defaults to a SQLite"
        " file in --data-dir, created and migrated on first start.",
    )
    command.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    command.add_argument("--port", type=int, help="port to listen on (default 8000)")
    command.add_argument(
        "--database-url", help="e.g. postgresql+asyncpg://user@host/db (default: SQLite file)"
    )
    command.add_argument("--data-dir", type=Path, help="state directory (default ./.shareai)")
    command.add_argument(
        "--hedge-by-default",
        action="store_true",
        default=None,
        help="race a second node for requests that do not set provider.hedge, when the first"
        " node's first token is late against its own p90",
    )
    command.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from coordinator.metering import InvalidTokenizerMap  # noqa: PLC0415
    from coordinator.server import serve  # noqa: PLC0415 - keep other commands light
    from coordinator.settings import SettingsError, load_settings  # noqa: PLC0415
    from protocol import KeyFileError  # noqa: PLC0415

    try:
        settings = load_settings(
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            data_dir=args.data_dir,
            hedge_by_default=args.hedge_by_default,
        )
    except SettingsError as error:
        print(f"shareai: error: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve(settings))
    except (KeyFileError, InvalidTokenizerMap) as error:
        print(f"shareai: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(
            f"shareai: error: cannot serve on {settings.host}:{settings.port}: {error}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0

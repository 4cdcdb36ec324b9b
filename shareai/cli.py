"""The ``shareai`` command. Only commands that work are registered.

Errors are one line on stderr with a non-zero exit: 2 for a bad command line, 1 for a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from protocol import Identity, KeyFileError
from shareai import admin_cli, coordinator_cli, local_network, node_cli, routes_cli

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _package_version() -> str:
    try:
        return version("shareai")
    except PackageNotFoundError:
        return "unknown"


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="shareai",
        description="ShareAI: a people-powered AI marketplace and OpenAI-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"shareai {_package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a narrated protocol demonstration between two in-process peers",
        description="Two in-process peers perform the signed handshake, exchange authenticated"
        " frames and a signed usage receipt, and refuse tampered and replayed frames.",
    )
    demo.set_defaults(handler=_run_demo)

    identity = commands.add_parser("identity", help="create and inspect Ed25519 identity keys")
    identity_commands = identity.add_subparsers(
        dest="identity_command", required=True, metavar="{new,show}"
    )
    new = identity_commands.add_parser(
        "new", help="generate a key file (mode 0600) and print its public key and ids"
    )
    new.add_argument("path", type=Path, help="where to write the private key")
    new.add_argument("--force", action="store_true", help="replace an existing key file")
    new.add_argument("--json", action="store_true", help="print JSON for scripts")
    new.set_defaults(handler=_identity_new)
    show = identity_commands.add_parser("show", help="print the public key and ids of a key file")
    show.add_argument("path", type=Path, help="the private key file")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(handler=_identity_show)

    local_network.register(commands)
    coordinator_cli.register(commands)
    node_cli.register(commands)
    admin_cli.register(commands)
    routes_cli.register(commands)
    return parser


def _run_demo(_: argparse.Namespace) -> int:
    from shareai.demo import run_demo  # noqa: PLC0415 - keep `shareai --help` fast

    return run_demo()


def _identity_new(args: argparse.Namespace) -> int:
    identity = Identity.generate()
    identity.save(args.path, overwrite=args.force)
    _print_identity(identity, args.path, as_json=args.json)
    return 0


def _identity_show(args: argparse.Namespace) -> int:
    _print_identity(Identity.load(args.path), args.path, as_json=args.json)
    return 0


def _print_identity(identity: Identity, path: Path, *, as_json: bool) -> None:
    key = identity.public_key
    fields = {
        "path": str(path),
        "public_key": key.to_text(),
        "node_id": key.node_id,
        "coordinator_id": key.coordinator_id,
    }
    if as_json:
        print(json.dumps(fields))
    else:
        for name, value in fields.items():
            print(f"{name:<15} {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyFileError as error:
        print(f"shareai: error: {error}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

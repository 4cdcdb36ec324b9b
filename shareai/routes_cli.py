"""``shareai routes``: manage your task routes through the coordinator's API (docs/routing.md).

    shareai routes list                              the routes in force
    shareai routes show NAME [--version N]           one route as JSON
    shareai routes put NAME FILE                     create or change (a JSON or TOML file)
    shareai routes delete NAME
    shareai routes versions NAME
    shareai routes dry-run NAME FILE                 which rule a sample request would hit

Every command takes ``--coordinator URL`` (default ``SHAREAI_COORDINATOR``, else
http://127.0.0.1:8000) and ``--api-key`` (default ``SHAREAI_API_KEY``); ``--app APP_ID`` manages
a Builder app's routes instead of your account's. Output is JSON; failures are one line on stderr
(the API's error message) with exit 1, bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from shareai._args import positive_int

__all__ = ["register"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)
_DEFAULT_COORDINATOR = "http://127.0.0.1:8000"
_TIMEOUT_S = 30.0


def register(subparsers: argparse._SubParsersAction[_ParserT]) -> None:
    routes = subparsers.add_parser(
        "routes",
        help="your task routes (model: route:NAME): list, show, put, delete, dry-run",
        description="Manage task routes through the coordinator's API.",
    )
    commands = routes.add_subparsers(dest="routes_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="the routes in force")
    _add_connection(listing)
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="one route (the version in force, or --version)")
    _add_connection(show)
    show.add_argument("name")
    show.add_argument("--version", type=positive_int, help="a past version")
    show.set_defaults(handler=_show)

    put = commands.add_parser("put", help="create or change a route from a JSON or TOML file")
    _add_connection(put)
    put.add_argument("name")
    put.add_argument("file", type=Path)
    put.set_defaults(handler=_put)

    remove = commands.add_parser("delete", help="delete a route (its versions are kept)")
    _add_connection(remove)
    remove.add_argument("name")
    remove.set_defaults(handler=_delete)

    versions = commands.add_parser("versions", help="every version of a route, newest first")
    _add_connection(versions)
    versions.add_argument("name")
    versions.set_defaults(handler=_versions)

    dry = commands.add_parser(
        "dry-run", help="which rule a sample request (a JSON file) would hit, without running it"
    )
    _add_connection(dry)
    dry.add_argument("name")
    dry.add_argument("file", type=Path, help="a chat (messages) or text (prompt) request body")
    dry.set_defaults(handler=_dry_run)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator",
        metavar="URL",
        help=f"the coordinator (default: SHAREAI_COORDINATOR, else {_DEFAULT_COORDINATOR})",
    )
    parser.add_argument("--api-key", help="your API key (default: SHAREAI_API_KEY)")
    parser.add_argument("--app", metavar="APP_ID", help="a Builder app's routes (your app)")


class _Failure(Exception):
    """One line for stderr."""


def _base(args: argparse.Namespace) -> str:
    root = args.coordinator or os.environ.get("SHAREAI_COORDINATOR") or _DEFAULT_COORDINATOR
    root = root.rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise _Failure(f"--coordinator must be an http(s) URL, got {root!r}")
    prefix = f"/v1/apps/{args.app}/routes" if args.app else "/v1/routes"
    return root + prefix


def _call(args: argparse.Namespace, method: str, path: str = "", body: object = None) -> Any:
    import httpx  # noqa: PLC0415 - keep `shareai --help` fast

    key = args.api_key or os.environ.get("SHAREAI_API_KEY")
    if not key:
        raise _Failure("no API key: pass --api-key or set SHAREAI_API_KEY")
    url = _base(args) + path
    try:
        response = httpx.request(
            method,
            url,
            headers={"authorization": f"Bearer {key}"},
            json=body,
            timeout=_TIMEOUT_S,
        )
    except httpx.HTTPError as error:
        raise _Failure(f"cannot reach {url}: {error}") from None
    try:
        data = response.json()
    except ValueError:
        raise _Failure(f"{url} answered {response.status_code} without JSON") from None
    if response.status_code >= 400:
        problem = data.get("error", {}) if isinstance(data, dict) else {}
        where = f" ({problem['param']})" if problem.get("param") else ""
        raise _Failure(f"{problem.get('message', response.text)}{where}")
    return data


def _read(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _Failure(f"cannot read {path}: {error}") from None
    try:
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise _Failure(f"{path} is not valid {kind}: {error}") from None


def _run(args: argparse.Namespace, method: str, path: str = "", body: object = None) -> int:
    try:
        print(json.dumps(_call(args, method, path, body), indent=2))
    except _Failure as failure:
        print(f"shareai: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    return _run(args, "GET")


def _show(args: argparse.Namespace) -> int:
    suffix = f"?version={args.version}" if args.version else ""
    return _run(args, "GET", f"/{args.name}{suffix}")


def _put(args: argparse.Namespace) -> int:
    return _send_file(args, "PUT", f"/{args.name}")


def _delete(args: argparse.Namespace) -> int:
    return _run(args, "DELETE", f"/{args.name}")


def _versions(args: argparse.Namespace) -> int:
    return _run(args, "GET", f"/{args.name}/versions")


def _dry_run(args: argparse.Namespace) -> int:
    return _send_file(args, "POST", f"/{args.name}/dry-run")


def _send_file(args: argparse.Namespace, method: str, path: str) -> int:
    """``args.file`` (JSON or TOML) as the request body."""
    try:
        body = _read(args.file)
    except _Failure as failure:
        print(f"shareai: error: {failure}", file=sys.stderr)
        return 1
    return _run(args, method, path, body)

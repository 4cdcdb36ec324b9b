"""``shareai admin catalogue``: the operator's model catalogue (docs/routing.md).

Every change is stored as a new catalogue version; running coordinators apply it within their
refresh interval (``SHAREAI_CATALOGUE_REFRESH_S``, 2 s by default). Entries are TOML or JSON
files in the format of ``coordinator/catalogue/starter.toml``. A tokenizer that does not load on
this machine is a warning here (the coordinator may run elsewhere) and an error in the API.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shareai._args import positive_int

if TYPE_CHECKING:
    from coordinator.catalogue import Catalogue, CatalogueEntry
    from shareai.admin_cli import AdminDatabase

__all__ = ["register"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)


def register(admin_commands: argparse._SubParsersAction[_ParserT]) -> None:
    """Add ``catalogue`` to the ``shareai admin`` subcommands."""
    from shareai.admin_cli import add_database_options, run_admin  # noqa: PLC0415 - a cycle

    catalogue = admin_commands.add_parser(
        "catalogue",
        help="the model catalogue: canonical ids, aliases, context, tokenizers",
        description="List and change the model catalogue; each change is a new version.",
    )
    commands = catalogue.add_subparsers(dest="catalogue_command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="every catalogued model, one per line")
    add_database_options(listing, with_json=True)
    listing.set_defaults(handler=run_admin(_list))

    show = commands.add_parser("show", help="one model, by its id or any alias")
    add_database_options(show, with_json=True)
    show.add_argument("model", help="the canonical id or any alias")
    show.set_defaults(handler=run_admin(_show))

    put = commands.add_parser("put", help="add a model or replace it (all fields given here)")
    add_database_options(put, with_json=True)
    put.add_argument("id", help="the canonical id, e.g. meta-llama/Llama-3.1-8B-Instruct")
    put.add_argument("--name", required=True, help="the display name")
    put.add_argument("--context-length", required=True, type=positive_int, metavar="TOKENS")
    put.add_argument("--alias", action="append", default=[], help="another spelling (repeat)")
    put.add_argument("--family", default="", help="e.g. llama-3.1")
    put.add_argument("--tokenizer", help="a tokenizer.json path, or package:MODULE/PATH")
    put.add_argument("--fingerprint", action="append", default=[], help="known weights (repeat)")
    put.add_argument("--description", default="")
    put.set_defaults(handler=run_admin(_put))

    alias = commands.add_parser("alias", help="add spellings to a model")
    add_database_options(alias, with_json=True)
    alias.add_argument("model", help="the canonical id or any alias")
    alias.add_argument("aliases", nargs="+", metavar="ALIAS")
    alias.set_defaults(handler=run_admin(_alias))

    unalias = commands.add_parser("unalias", help="remove spellings from a model")
    add_database_options(unalias, with_json=True)
    unalias.add_argument("model", help="the canonical id or any alias")
    unalias.add_argument("aliases", nargs="+", metavar="ALIAS")
    unalias.set_defaults(handler=run_admin(_unalias))

    remove = commands.add_parser("remove", help="remove a model; its offers become uncatalogued")
    add_database_options(remove, with_json=True)
    remove.add_argument("model", help="the canonical id or any alias")
    remove.set_defaults(handler=run_admin(_remove))

    load = commands.add_parser(
        "import", help="add or replace the models of a TOML or JSON file ([[models]] entries)"
    )
    add_database_options(load, with_json=True)
    load.add_argument("file", type=Path)
    load.add_argument("--replace", action="store_true", help="the file becomes the whole catalogue")
    load.set_defaults(handler=run_admin(_import))

    export = commands.add_parser("export", help="print the whole catalogue as JSON (importable)")
    add_database_options(export)
    export.set_defaults(handler=run_admin(_export))

    history = commands.add_parser("history", help="the recent catalogue versions")
    add_database_options(history, with_json=True)
    history.add_argument("--limit", type=positive_int, default=20)
    history.set_defaults(handler=run_admin(_history))


# --- commands ---------------------------------------------------------------------------------


async def _list(args: argparse.Namespace, database: AdminDatabase) -> None:
    version, catalogue = await _current(database)
    if args.json:
        print(json.dumps({"version": version, **catalogue.to_document()}))
        return
    print(f"catalogue version {version}: {len(catalogue)} models")
    print(f"{'ID':<45} {'CONTEXT':>8} {'ALIASES':>7}  {'TOKENIZER':<9} NAME")
    for entry in catalogue:
        tokenizer = "yes" if entry.tokenizer else "-"
        print(
            f"{entry.id:<45} {entry.context_length:>8} {len(entry.aliases):>7}  {tokenizer:<9}"
            f" {entry.name}"
        )


async def _show(args: argparse.Namespace, database: AdminDatabase) -> None:
    version, catalogue = await _current(database)
    entry = _find(catalogue, args.model)
    if args.json:
        print(json.dumps({"version": version, **entry.to_json()}))
        return
    for name, value in entry.to_json().items():
        print(f"{name:<16}{_shown(value)}")


async def _put(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.catalogue import CatalogueEntry  # noqa: PLC0415

    entry = CatalogueEntry.parse(
        {
            "id": args.id,
            "name": args.name,
            "context_length": args.context_length,
            "aliases": args.alias,
            "family": args.family,
            "tokenizer": args.tokenizer,
            "fingerprints": args.fingerprint,
            "description": args.description,
        },
        where=args.id,
    )
    _warn_tokenizers([entry])
    version, _ = await _change(database, lambda c: c.with_entry(entry), f"put {entry.id}")
    _done(args, version, f"{entry.id} stored", entry=entry.to_json())


async def _alias(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.catalogue import add_aliases  # noqa: PLC0415

    change = add_aliases(args.model, args.aliases)
    version, catalogue = await _change(database, change, f"alias {args.model}")
    entry = _find(catalogue, args.model)
    _done(args, version, f"{entry.id}: aliases {', '.join(entry.aliases)}", entry=entry.to_json())


async def _unalias(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.catalogue import remove_aliases  # noqa: PLC0415

    change = remove_aliases(args.model, args.aliases)
    version, catalogue = await _change(database, change, f"unalias {args.model}")
    entry = _find(catalogue, args.model)
    _done(args, version, f"{entry.id}: aliases {', '.join(entry.aliases) or '(none)'}")


async def _remove(args: argparse.Namespace, database: AdminDatabase) -> None:
    removed: list[str] = []

    def change(catalogue: Catalogue) -> Catalogue:
        entry = _find(catalogue, args.model)
        removed[:] = [entry.id]
        return catalogue.without(entry.id)

    version, _ = await _change(database, change, f"remove {args.model}")
    _done(args, version, f"{removed[0]} removed")


async def _import(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.catalogue import Catalogue, load_catalogue_file  # noqa: PLC0415

    loaded = load_catalogue_file(args.file)
    _warn_tokenizers(list(loaded))

    def change(catalogue: Catalogue) -> Catalogue:
        if args.replace:
            return loaded
        incoming = {entry.id for entry in loaded}
        return Catalogue([*(e for e in catalogue if e.id not in incoming), *loaded])

    mode = "replace" if args.replace else "merge"
    version, catalogue = await _change(database, change, f"import {args.file.name} ({mode})")
    _done(args, version, f"{len(loaded)} models imported; the catalogue has {len(catalogue)}")


async def _export(_args: argparse.Namespace, database: AdminDatabase) -> None:
    _, catalogue = await _current(database)
    print(json.dumps(catalogue.to_document(), indent=2))


async def _history(args: argparse.Namespace, database: AdminDatabase) -> None:
    from coordinator.catalogue import catalogue_history  # noqa: PLC0415

    async with database.sessions() as session:
        rows = await catalogue_history(session, args.limit)
    if args.json:
        print(json.dumps([asdict(row) for row in rows]))
        return
    for row in rows:
        print(f"v{row.version:<5} {row.models:>4} models  {row.author:<30} {row.note}")


# --- helpers ----------------------------------------------------------------------------------


def _shown(value: object) -> object:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):  # modalities
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in value.items())
    return value


async def _current(database: AdminDatabase) -> tuple[int, Catalogue]:
    from coordinator.catalogue import ensure_catalogue  # noqa: PLC0415

    return await ensure_catalogue(database.sessions)


async def _change(database: Any, change: Any, note: str) -> tuple[int, Catalogue]:
    from coordinator.catalogue import change_catalogue, ensure_catalogue  # noqa: PLC0415

    await ensure_catalogue(database.sessions)  # edits start from the starter set, never empty
    return await change_catalogue(database.sessions, change, author="admin-cli", note=note)


def _find(catalogue: Catalogue, model: str) -> CatalogueEntry:
    from coordinator.catalogue import find_model  # noqa: PLC0415

    return find_model(catalogue, model)


def _warn_tokenizers(entries: list[CatalogueEntry]) -> None:
    from coordinator.catalogue import check_tokenizer  # noqa: PLC0415
    from coordinator.tokens import TokenizerError  # noqa: PLC0415

    for entry in entries:
        if entry.tokenizer is None:
            continue
        try:
            check_tokenizer(entry.tokenizer)
        except TokenizerError as error:
            print(
                f"shareai: warning: {entry.id}: tokenizer does not load on this machine"
                f" ({' '.join(str(error).split())}); a coordinator without it meters this model"
                " from bounded node reports",
                file=sys.stderr,
            )


def _done(args: argparse.Namespace, version: int, message: str, **extra: Any) -> None:
    if args.json:
        print(json.dumps({"version": version, **extra}))
    else:
        print(f"catalogue version {version}: {message}")

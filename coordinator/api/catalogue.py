"""The model catalogue over HTTP: public reading, operator editing (docs/routing.md).

- ``GET /v1/catalogue``: every catalogued model with its live node count (public; no
  tokenizer paths).
- ``GET /v1/admin/catalogue``: the same with tokenizer files and whether they load, plus the
  recent versions (operator).
- ``PUT /v1/admin/catalogue/{id}``: add or replace one entry (operator); applies at once.
- ``DELETE /v1/admin/catalogue/{id}``: remove one (operator); its nodes' offers become
  uncatalogued names.

Every change is a new catalogue version (:mod:`coordinator.catalogue.store`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, put
from litestar.handlers import HTTPRouteHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.api.bodies import read_json_object
from coordinator.api.context import Services, caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.catalogue import (
    Catalogue,
    CatalogueBusy,
    CatalogueChange,
    CatalogueEntry,
    CatalogueError,
    InvalidEntry,
    ModelNotInCatalogue,
    PutEntry,
    catalogue_history,
    checked_entry,
    remove_model,
    store_change,
)

__all__ = ["CATALOGUE_HANDLERS", "catalogue_entry_json"]

_MAX_ID = 256


def catalogue_entry_json(
    entry: CatalogueEntry, services: Services, nodes: int, *, with_tokenizer: bool
) -> dict[str, Any]:
    """An entry as the API shows it: ``nodes`` live now and how its tokens are counted."""
    data = entry.to_json()
    if not with_tokenizer:
        data.pop("tokenizer")
    data["nodes"] = nodes
    status = services.tokenizers.status(entry.id) if services.tokenizers is not None else "none"
    data["token_counting"] = "coordinator" if status == "counted" else "node_report_bounded"
    if with_tokenizer:
        data["tokenizer_status"] = status
    return data


def _entries_json(services: Services, *, with_tokenizer: bool) -> list[dict[str, Any]]:
    counts = services.registry.node_counts()
    return [
        catalogue_entry_json(e, services, counts.get(e.id, 0), with_tokenizer=with_tokenizer)
        for e in services.catalogue.current
    ]


async def _operator(request: Request[Any, Any, Any], doing: str) -> tuple[Services, str]:
    caller = await caller_of(request)
    if caller.role != "operator":
        raise ApiError(403, f"only an operator key can {doing}", code="wrong_role")
    return services_of(request), caller.account_id


def _sessions(services: Services) -> async_sessionmaker[AsyncSession]:
    if services.sessions is None:
        raise ApiError(404, "the catalogue is not stored on this coordinator", code="not_found")
    return services.sessions


def _model_id(request: Request[Any, Any, Any]) -> str:
    model_id = str(request.path_params["model_id"]).strip("/")
    if not model_id or len(model_id) > _MAX_ID:
        raise ApiError(404, "name a catalogue model: /v1/admin/catalogue/{id}", code="not_found")
    return model_id


@get("/v1/catalogue")
async def public_catalogue(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services = services_of(request)
    live = services.catalogue
    return {
        "object": "list",
        "version": live.version,
        "data": _entries_json(services, with_tokenizer=False),
    }


@get("/v1/admin/catalogue")
async def admin_catalogue(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, _ = await _operator(request, "see the catalogue's tokenizers and history")
    async with _sessions(services)() as session:
        history = await catalogue_history(session)
    live = services.catalogue
    return {
        "object": "list",
        "version": live.version,
        "data": _entries_json(services, with_tokenizer=True),
        "history": [
            {
                "version": h.version,
                "created_at_ms": h.created_at_ms,
                "author": h.author,
                "note": h.note,
                "models": h.models,
            }
            for h in history
        ],
    }


@put("/v1/admin/catalogue/{model_id:path}", status_code=200)
async def put_catalogue_entry(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Add or replace the entry ``id`` (the body is the entry; its ``id`` may be left out)."""
    services, operator = await _operator(request, "change the catalogue")
    model_id = _model_id(request)
    data = await read_json_object(request)
    if data.setdefault("id", model_id) != model_id:
        raise ApiError(
            400,
            f"the body's id {data['id']!r} is not {model_id!r}",
            code="invalid_value",
            param="id",
        )
    try:
        entry = checked_entry(data, where=model_id)
    except InvalidEntry as error:
        param = "tokenizer" if error.field == "tokenizer" else None
        raise ApiError(400, str(error), code="invalid_catalogue_entry", param=param) from None
    put = PutEntry(entry)
    version, catalogue = await _change(services, put, operator, f"put {model_id}")
    return {
        "object": "catalogue.entry",
        "version": version,
        "created": not put.replaced,
        "entry": catalogue_entry_json(
            entry, services, services.registry.node_counts().get(entry.id, 0), with_tokenizer=True
        ),
        "models": len(catalogue),
    }


@delete("/v1/admin/catalogue/{model_id:path}", status_code=200)
async def delete_catalogue_entry(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, operator = await _operator(request, "change the catalogue")
    model_id = _model_id(request)
    try:
        version, catalogue = await _change(
            services, remove_model(model_id), operator, f"remove {model_id}"
        )
    except ModelNotInCatalogue as error:
        raise ApiError(404, str(error), code="model_not_found", param="id") from None
    return {
        "object": "catalogue.entry.deleted",
        "id": model_id,
        "version": version,
        "deleted": True,
        "models": len(catalogue),
    }


async def _change(
    services: Services,
    change: CatalogueChange,
    operator: str,
    note: str,
) -> tuple[int, Catalogue]:
    """Store ``change`` (see :func:`coordinator.catalogue.store_change`); ModelNotInCatalogue
    passes through for the handler to word."""
    try:
        return await store_change(
            _sessions(services),
            services.catalogue,
            change,
            author=f"operator:{operator}",
            note=note,
        )
    except ModelNotInCatalogue:
        raise
    except CatalogueBusy as error:
        raise ApiError(503, str(error), code="catalogue_busy") from None
    except CatalogueError as error:
        raise ApiError(409, str(error), code="catalogue_conflict") from None


CATALOGUE_HANDLERS: list[HTTPRouteHandler] = [
    public_catalogue,
    admin_catalogue,
    put_catalogue_entry,
    delete_catalogue_entry,
]

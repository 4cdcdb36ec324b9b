"""Task routes over HTTP, and using one for a request (``model: "route:NAME"``).

A customer's routes (their own traffic)::

    GET    /v1/routes                         the routes in force
    GET    /v1/routes/{name}[?version=N]      one route (a past version with ?version)
    PUT    /v1/routes/{name}                  create or change: the next version
    DELETE /v1/routes/{name}
    GET    /v1/routes/{name}/versions         every version, newest first
    POST   /v1/routes/{name}/dry-run          which rule a sample request would hit

A Builder's app routes (the traffic of the app's scoped keys): the same under
``/v1/apps/{app_id}/routes``. Documents and the rule language: docs/routing.md.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, delete, get, post, put
from litestar.handlers import HTTPRouteHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.api.bodies import read_json, read_json_object
from coordinator.api.completions import build_job, estimate_prompt_tokens, name_models
from coordinator.api.context import Caller, Services, caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.api.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from coordinator.apps import AppNotFound, get_app
from coordinator.routing import RouteInput, TaskRouteChoice
from coordinator.task_routes import (
    RouteOwner,
    StoredRoute,
    TaskRouteConflict,
    TaskRouteLimit,
    current_route,
    delete_route,
    list_routes,
    route_history,
    route_version,
    save_route,
)
from protocol import Job
from scheduler import (
    ROUTE_PREFIX,
    InvalidPreferences,
    InvalidTaskRoute,
    KnownModel,
    RequestFeatures,
    RoutingPreferences,
    Rule,
    RuleMatch,
    TaskRoute,
    match_task_route,
    parse_routing_preferences,
    parse_task_route,
    route_name,
    split_model_suffix,
)

__all__ = [
    "TASK_ROUTE_HANDLERS",
    "apply_task_route",
    "check_route_document",
    "dry_run",
    "request_features",
]

_MANAGERS = frozenset({"customer", "builder", "operator"})
_MAX_VERSION = 2**31 - 1
"""The version column's range: higher versions cannot exist."""


# --- using a route for a request ------------------------------------------------------------


def request_features(body: ChatCompletionRequest | CompletionRequest, job: Job) -> RequestFeatures:
    """What task-route rules match on (docs/routing.md, "Request features")."""
    metadata = dict(body.metadata or {})
    tags = frozenset(tag.strip() for tag in metadata.get("tags", "").split(",") if tag.strip())
    response_format = getattr(body, "response_format", None)
    return RequestFeatures(
        task=metadata.get("task"),
        tags=tags,
        metadata=metadata,
        tools=bool(getattr(body, "tools", None)),
        structured_output=response_format is not None and response_format.type != "text",
        stream=body.stream,
        prompt_tokens=estimate_prompt_tokens(job),
        output_tokens=job.sampling.max_tokens,
    )


async def apply_task_route(
    services: Services,
    caller: Caller,
    body: ChatCompletionRequest | CompletionRequest,
    job: Job,
    routing: RouteInput,
) -> None:
    """For ``model: "route:NAME"``: pick the rule, and route to its models (else nothing).

    The rule's models become the request's model and fallbacks, and its ``provider`` object is
    the base the request's own ``provider`` fields override. Raises ApiError: 404 for an
    unknown route, 400 for a request that also names fallback ``models``.
    """
    name = route_name(routing.prefs.model)
    if name is None:
        return
    _refuse_fallback_models(body)
    stored = await _route_for_request(services, caller, name)
    assert stored.route is not None  # a route in force has a document
    match = match_task_route(stored.route, request_features(body, job))
    routing.prefs = _preferences_of(match.rule, body, routing.prefs.session_id)
    routing.task_route = TaskRouteChoice(name, stored.version, match.rule.name, stored.owner.kind)


def _merged_provider(rule: Rule, body: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """The rule's ``provider`` object, overridden key by key by the request's own choices:
    a ``:floor`` / ``:nitro`` suffix on ``route:NAME``, then the request's ``provider``."""
    rule_provider = rule.to_json().get("provider", {})
    provider: dict[str, Any] = dict(rule_provider) if isinstance(rule_provider, dict) else {}
    _, suffix_sort = split_model_suffix(body.model)
    if suffix_sort is not None:  # "route:NAME:floor"
        provider["sort"] = suffix_sort
    if isinstance(body.provider, dict):
        provider.update(body.provider)
    return provider


def _refuse_fallback_models(body: ChatCompletionRequest | CompletionRequest) -> None:
    if body.models is not None:
        raise ApiError(
            400,
            "a request to a route cannot also name fallback models: the route's rules list them",
            code="invalid_value",
            param="models",
        )


def _preferences_of(
    rule: Rule, body: ChatCompletionRequest | CompletionRequest, session_id: str | None
) -> RoutingPreferences:
    try:
        return parse_routing_preferences(
            {
                "model": rule.models[0],
                "models": list(rule.models[1:]),
                "provider": _merged_provider(rule, body),
                "session_id": session_id,
            }
        )
    except InvalidPreferences as error:
        raise ApiError(
            400, f"invalid value for {error}", code="invalid_value", param=error.field
        ) from None


async def _route_for_request(services: Services, caller: Caller, name: str) -> StoredRoute:
    owners = [RouteOwner("account", caller.account_id)]
    if caller.app_id is not None:
        owners.insert(0, RouteOwner("app", caller.app_id))
    async with _sessions(services)() as session:
        for owner in owners:
            stored = await current_route(session, owner, name)
            if stored is not None:
                return stored
    raise ApiError(
        404,
        f"no route {name!r}: create it with PUT /v1/routes/{name}",
        code="route_not_found",
        param="model",
    )


# --- managing routes ---------------------------------------------------------------------------


def _sessions(services: Services) -> async_sessionmaker[AsyncSession]:
    if services.sessions is None:
        raise ApiError(404, "task routes are not stored on this coordinator", code="not_found")
    return services.sessions


async def _owner(request: Request[Any, Any, Any]) -> tuple[Services, Caller, RouteOwner]:
    """Who owns the routes of this URL, after checking the caller may manage them."""
    caller = await caller_of(request)
    services = services_of(request)
    if caller.app_id is not None:
        raise ApiError(
            403,
            "an app-scoped key cannot manage routes; use your account's key",
            code="app_scoped_key",
        )
    app_id = request.path_params.get("app_id")
    if app_id is None:
        if caller.role not in _MANAGERS:
            raise ApiError(403, f"a {caller.role} key has no traffic to route", code="wrong_role")
        return services, caller, RouteOwner("account", caller.account_id)
    async with _sessions(services)() as session:
        try:
            details = await get_app(session, str(app_id))
        except AppNotFound:
            raise ApiError(404, f"no app {app_id!r}", code="app_not_found") from None
    if details.app.builder_account_id != caller.account_id:
        raise ApiError(403, f"app {app_id} belongs to another account", code="not_your_app")
    return services, caller, RouteOwner("app", str(app_id))


def _name(request: Request[Any, Any, Any]) -> str:
    return str(request.path_params["name"])


def _known_model(services: Services) -> KnownModel:
    catalogue = services.catalogue.current

    def known(model: str) -> str | None:
        base, _ = split_model_suffix(model)
        if base.startswith(ROUTE_PREFIX):
            return "a route's rule names models, not other routes"
        if catalogue.resolve(base) is not None or services.registry.serves(base):
            return None
        return "no such model in the catalogue, and no node serves it under that name"

    return known


def check_route_document(services: Services, document: object, name: str) -> TaskRoute:
    """Validate a route document as ``PUT`` does: every model must be catalogued or served now.

    Raises :class:`scheduler.InvalidTaskRoute` naming the first bad field.
    """
    return parse_task_route(document, known_model=_known_model(services), name=name)


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"no route {name!r}", code="route_not_found")


@get(["/v1/routes", "/v1/apps/{app_id:str}/routes"])
async def list_routes_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, _, owner = await _owner(request)
    async with _sessions(services)() as session:
        routes = await list_routes(session, owner)
    return {"object": "list", "data": [stored.to_json() for stored in routes]}


@get(["/v1/routes/{name:str}", "/v1/apps/{app_id:str}/routes/{name:str}"])
async def get_route_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, _, owner = await _owner(request)
    name = _name(request)
    raw_version = request.query_params.get("version")
    async with _sessions(services)() as session:
        if raw_version is None:
            stored = await current_route(session, owner, name)
        elif raw_version.isascii() and raw_version.isdigit() and int(raw_version) >= 1:
            version = int(raw_version)
            stored = (
                await route_version(session, owner, name, version)
                if version <= _MAX_VERSION
                else None
            )
        else:
            raise ApiError(
                400,
                "version must be a whole number, 1 or more",
                code="invalid_value",
                param="version",
            )
    if stored is None:
        raise _not_found(name)
    return stored.to_json()


@put(["/v1/routes/{name:str}", "/v1/apps/{app_id:str}/routes/{name:str}"], status_code=200)
async def put_route_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, caller, owner = await _owner(request)
    document = await read_json(request, exact_decimals=False)
    try:
        route = check_route_document(services, document, _name(request))
    except InvalidTaskRoute as error:
        raise ApiError(400, str(error), code="invalid_route", param=error.field or None) from None
    try:
        stored = await save_route(_sessions(services), owner, route, caller.account_id)
    except TaskRouteLimit as error:
        raise ApiError(409, str(error), code="too_many_routes") from None
    except TaskRouteConflict as error:
        raise ApiError(409, str(error), code="route_conflict") from None
    return stored.to_json()


@delete(["/v1/routes/{name:str}", "/v1/apps/{app_id:str}/routes/{name:str}"], status_code=200)
async def delete_route_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, caller, owner = await _owner(request)
    name = _name(request)
    try:
        stored = await delete_route(_sessions(services), owner, name, caller.account_id)
    except TaskRouteConflict as error:
        raise ApiError(409, str(error), code="route_conflict") from None
    if stored is None:
        raise _not_found(name)
    return {"object": "route.deleted", "name": name, "version": stored.version, "deleted": True}


@get(["/v1/routes/{name:str}/versions", "/v1/apps/{app_id:str}/routes/{name:str}/versions"])
async def route_versions_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services, _, owner = await _owner(request)
    name = _name(request)
    async with _sessions(services)() as session:
        history = await route_history(session, owner, name)
    if not history:
        raise _not_found(name)
    return {
        "object": "list",
        "name": name,
        "data": [
            {"version": s.version, "created_at_ms": s.created_at_ms, "deleted": s.route is None}
            for s in history
        ],
    }


@post(
    ["/v1/routes/{name:str}/dry-run", "/v1/apps/{app_id:str}/routes/{name:str}/dry-run"],
    status_code=200,
)
async def dry_run_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The body is a sample chat (``messages``) or text (``prompt``) completion request."""
    services, _, owner = await _owner(request)
    sample = await read_json_object(request, exact_decimals=False)
    return await dry_run(services, owner, _name(request), sample)


async def dry_run(
    services: Services, owner: RouteOwner, name: str, sample: dict[str, Any]
) -> dict[str, Any]:
    """Which rule of ``owner``'s route ``name`` a sample request would use, and which of its
    models are live: the answer of ``POST .../dry-run``. Nothing runs and nothing is reserved.

    ``sample`` is a chat (``messages``) or text (``prompt``) completion body; its ``model`` may
    be left out. Raises ApiError: 400 for a malformed sample, 404 when there is no such route.
    """
    sample = {**sample}
    sample.setdefault("model", f"{ROUTE_PREFIX}{name}")
    raw = json.dumps(sample).encode()
    body: ChatCompletionRequest | CompletionRequest = (
        parse_body(raw, ChatCompletionRequest)
        if "messages" in sample
        else parse_body(raw, CompletionRequest)
    )
    _refuse_fallback_models(body)
    job = build_job(body, services.completion)
    async with _sessions(services)() as session:
        stored = await current_route(session, owner, name)
    if stored is None or stored.route is None:
        raise _not_found(name)
    features = request_features(body, job)
    match: RuleMatch = match_task_route(stored.route, features)
    catalogue = services.catalogue.current
    prefs = name_models(_preferences_of(match.rule, body, None), catalogue)
    counts = services.registry.node_counts()
    return {
        "object": "route.dry_run",
        "route": name,
        "version": stored.version,
        "features": features.to_json(),
        **match.to_json(),
        "provider": _merged_provider(match.rule, body),
        "availability": [
            {
                "model": model,
                "catalogued": catalogue.get(model) is not None,
                "nodes": counts.get(model, 0),
            }
            for model in prefs.models_in_order()
        ],
    }


TASK_ROUTE_HANDLERS: list[HTTPRouteHandler] = [
    list_routes_endpoint,
    get_route_endpoint,
    put_route_endpoint,
    delete_route_endpoint,
    route_versions_endpoint,
    dry_run_endpoint,
]

"""Task route pages: list, create, edit, delete, version history and dry run, in a browser.

The same pages serve two owners (docs/routing.md, "Task routes"):

- a customer's own routes, under ``/console/customer/routes``;
- a Builder's app's routes, under ``/console/builder/apps/{app_id}/routes``, where the app is
  looked up *within the viewer's account* (another Builder's app is "not found", like an
  unknown one).

Storage, validation and dry runs are the JSON API's (:mod:`coordinator.task_routes`,
:func:`coordinator.api.task_routes.check_route_document` and
:func:`coordinator.api.task_routes.dry_run`), so a route behaves the same however it is edited.
A document is typed as JSON (what the API takes) or TOML (what ``shareai routes put`` reads).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template
from sqlalchemy import select

from coordinator.api.context import services_of
from coordinator.api.errors import ApiError
from coordinator.api.task_routes import check_route_document, dry_run
from coordinator.db.models import App, Role
from coordinator.task_routes import (
    MAX_ROUTES_PER_OWNER,
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
from coordinator.web.pages import PageError, database, page, read_form, require_viewer, see_other
from coordinator.web.sessions import Viewer
from scheduler import InvalidTaskRoute, TaskRoute

__all__ = ["TASK_ROUTE_PAGE_HANDLERS"]

_CUSTOMER_BASE = "/console/customer/routes"
_APP_BASE = "/console/builder/apps/{app_id:str}/routes"
_MAX_VERSION = 2**31 - 1
_MAX_METADATA_PAIRS = 16

_EXAMPLE = """{
  "description": "short questions to a small model",
  "rules": [
    {"name": "classify", "when": {"task": ["classification"]}, "models": ["MODEL"]}
  ],
  "default": {"models": ["MODEL"]}
}"""

_SAMPLE_TOOL = {
    "type": "function",
    "function": {
        "name": "sample_tool",
        "description": "a stand-in tool: the dry run only looks at whether tools are offered",
        "parameters": {"type": "object", "properties": {}},
    },
}


@dataclass(frozen=True, slots=True)
class _Scope:
    """Whose routes a page shows, and where its pages live."""

    viewer: Viewer
    owner: RouteOwner
    base: str
    heading: str
    app: App | None = None


async def _scope(request: Request[Any, Any, Any]) -> _Scope:
    """The viewer and the routes this URL names: the customer's own, or one of the Builder's
    apps (404 unless the app is the viewer's)."""
    app_id = request.path_params.get("app_id")
    if app_id is None:
        viewer = await require_viewer(request, Role.CUSTOMER)
        owner = RouteOwner("account", viewer.account_id)
        return _Scope(viewer, owner, _CUSTOMER_BASE, "Your task routes")
    viewer = await require_viewer(request, Role.BUILDER)
    async with database(services_of(request))() as session:
        app = await session.scalar(
            select(App).where(App.id == str(app_id), App.builder_account_id == viewer.account_id)
        )
    if app is None:
        raise PageError(404, f"no app {str(app_id)!r} of yours")
    base = f"/console/builder/apps/{app.id}/routes"
    return _Scope(viewer, RouteOwner("app", app.id), base, f"Task routes of {app.name}", app)


def _name(request: Request[Any, Any, Any]) -> str:
    return str(request.path_params["name"])


def _document_text(stored: StoredRoute) -> str:
    assert stored.route is not None
    return json.dumps(stored.route.to_json(), indent=2)


def _parse_text(text: str) -> object:
    """A typed document: JSON when it starts with ``{``, else TOML. Raises InvalidTaskRoute."""
    stripped = text.strip()
    if not stripped:
        raise InvalidTaskRoute("document", "is empty: type the route's JSON (or TOML)")
    try:
        return json.loads(stripped) if stripped.startswith("{") else tomllib.loads(stripped)
    except json.JSONDecodeError as error:
        raise InvalidTaskRoute("document", f"is not valid JSON: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidTaskRoute("document", f"is not valid TOML (nor JSON): {error}") from None


def _example(request: Request[Any, Any, Any]) -> str:
    """A starting document naming a model the network serves now."""
    served = [summary.model for summary in services_of(request).registry.summaries()]
    return _EXAMPLE.replace("MODEL", served[0] if served else "MODEL")


def _list_context(
    request: Request[Any, Any, Any], scope: _Scope, routes: list[StoredRoute], **extra: Any
) -> dict[str, Any]:
    return {
        "scope": scope,
        "routes": routes,
        "max_routes": MAX_ROUTES_PER_OWNER,
        "form_name": "",
        "form_document": _example(request),
        "error": "",
        "error_field": "",
    } | extra


@get([_CUSTOMER_BASE, _APP_BASE])
async def routes_page(request: Request[Any, Any, Any]) -> Template:
    scope = await _scope(request)
    async with database(services_of(request))() as session:
        routes = await list_routes(session, scope.owner)
    return page(
        request,
        "routes.html",
        scope.viewer,
        _list_context(request, scope, routes),
        title=scope.heading,
    )


@post([_CUSTOMER_BASE, _APP_BASE], status_code=303)
async def create_route(request: Request[Any, Any, Any]) -> Response[Any]:
    scope = await _scope(request)
    fields = await read_form(request, scope.viewer)
    name, text = fields.get("name", "").strip(), fields.get("document", "")
    sessions = database(services_of(request))
    try:
        route = await _new_route(request, scope, name, text)
        stored = await save_route(sessions, scope.owner, route, scope.viewer.account_id)
    except (InvalidTaskRoute, TaskRouteLimit, TaskRouteConflict) as refused:
        async with sessions() as session:
            routes = await list_routes(session, scope.owner)
        context = _list_context(
            request, scope, routes, form_name=name, form_document=text, **_refusal(refused)
        )
        return page(
            request, "routes.html", scope.viewer, context, status_code=400, title=scope.heading
        )
    return see_other(
        f"{scope.base}/{stored.name}",
        notice=f"Route {stored.name} created (version {stored.version}).",
    )


async def _new_route(
    request: Request[Any, Any, Any], scope: _Scope, name: str, text: str
) -> TaskRoute:
    """The route a create form describes; raises InvalidTaskRoute (a taken name too)."""
    document = _parse_text(text)
    if not name and isinstance(document, dict) and isinstance(document.get("name"), str):
        name = document["name"]
    if not name:
        raise InvalidTaskRoute("name", "give the route a name")
    route = check_route_document(services_of(request), document, name)
    async with database(services_of(request))() as session:
        taken = await current_route(session, scope.owner, route.name) is not None
    if taken:
        raise InvalidTaskRoute("name", f"a route named {route.name!r} exists already: edit it")
    return route


def _refusal(refused: Exception) -> dict[str, str]:
    if isinstance(refused, InvalidTaskRoute):
        return {"error": str(refused), "error_field": refused.field}
    return {"error": str(refused), "error_field": ""}


async def _detail_context(
    request: Request[Any, Any, Any], scope: _Scope, name: str, **extra: Any
) -> dict[str, Any]:
    """What the route's page shows: the version in force (or ``?version=N``), the history."""
    raw_version = request.query_params.get("version", "")
    async with database(services_of(request))() as session:
        history = await route_history(session, scope.owner, name)
        current = await current_route(session, scope.owner, name)
        shown = None
        if raw_version.isascii() and raw_version.isdigit() and int(raw_version) >= 1:
            if int(raw_version) <= _MAX_VERSION:
                shown = await route_version(session, scope.owner, name, int(raw_version))
            if shown is None:
                raise PageError(404, f"route {name!r} has no version {raw_version}")
        elif raw_version:
            raise PageError(400, "version must be a whole number, 1 or more")
    if current is None and shown is None:
        raise PageError(404, f"no route {name!r}")
    context: dict[str, Any] = {
        "scope": scope,
        "name": name,
        "current": current,
        "shown": shown,
        "shown_document": _document_text(shown) if shown and shown.route else "",
        "history": history,
        "document": _document_text(current) if current is not None else "",
        "error": "",
        "error_field": "",
        "sample": _sample_form({}),
        "dry_run": None,
        "dry_run_error": "",
    }
    return context | extra


@get([f"{_CUSTOMER_BASE}/{{name:str}}", f"{_APP_BASE}/{{name:str}}"])
async def route_page(request: Request[Any, Any, Any]) -> Template:
    scope = await _scope(request)
    name = _name(request)
    context = await _detail_context(request, scope, name)
    return page(request, "routes_detail.html", scope.viewer, context, title=f"Route {name}")


@post([f"{_CUSTOMER_BASE}/{{name:str}}", f"{_APP_BASE}/{{name:str}}"], status_code=303)
async def edit_route(request: Request[Any, Any, Any]) -> Response[Any]:
    scope = await _scope(request)
    fields = await read_form(request, scope.viewer)
    name, text = _name(request), fields.get("document", "")
    sessions = database(services_of(request))
    async with sessions() as session:
        before = await current_route(session, scope.owner, name)
    if before is None:
        raise PageError(404, f"no route {name!r}")
    try:
        route = check_route_document(services_of(request), _parse_text(text), name)
        stored = await save_route(sessions, scope.owner, route, scope.viewer.account_id)
    except (InvalidTaskRoute, TaskRouteLimit, TaskRouteConflict) as refused:
        context = await _detail_context(request, scope, name, document=text, **_refusal(refused))
        return page(
            request,
            "routes_detail.html",
            scope.viewer,
            context,
            status_code=400,
            title=f"Route {name}",
        )
    notice = (
        f"Saved as version {stored.version}: new requests use it."
        if stored.version != before.version
        else f"Nothing changed: the route is the same as version {before.version}."
    )
    return see_other(f"{scope.base}/{name}", notice=notice)


@post(
    [f"{_CUSTOMER_BASE}/{{name:str}}/delete", f"{_APP_BASE}/{{name:str}}/delete"], status_code=303
)
async def remove_route(request: Request[Any, Any, Any]) -> Response[Any]:
    scope = await _scope(request)
    await read_form(request, scope.viewer)
    name = _name(request)
    try:
        stored = await delete_route(
            database(services_of(request)), scope.owner, name, scope.viewer.account_id
        )
    except TaskRouteConflict as conflict:
        raise PageError(409, str(conflict)) from None
    if stored is None:
        raise PageError(404, f"no route {name!r}")
    return see_other(
        scope.base, notice=f"Route {name} deleted (version {stored.version} records it)."
    )


def _sample_form(fields: dict[str, str]) -> dict[str, str]:
    """The dry-run form's fields, as typed (so the form shows them again)."""
    return {
        key: fields.get(key, "")
        for key in (
            "task",
            "tags",
            "metadata",
            "prompt",
            "max_tokens",
            "tools",
            "structured_output",
            "stream",
        )
    }


def _sample_request(form: dict[str, str]) -> dict[str, Any]:
    """A chat request with the features typed in the dry-run form. Raises ValueError."""
    metadata: dict[str, str] = {}
    if form["task"].strip():
        metadata["task"] = form["task"].strip()
    tags = [tag.strip() for tag in form["tags"].split(",") if tag.strip()]
    if tags:
        metadata["tags"] = ",".join(tags)
    for number, line in enumerate(form["metadata"].splitlines(), start=1):
        if not line.strip():
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"metadata line {number}: write key=value")
        metadata[key.strip()] = value.strip()
    if len(metadata) > _MAX_METADATA_PAIRS:
        raise ValueError(f"at most {_MAX_METADATA_PAIRS} metadata pairs (task and tags count)")
    sample: dict[str, Any] = {
        "messages": [{"role": "user", "content": form["prompt"] or "Hello"}],
    }
    if metadata:
        sample["metadata"] = metadata
    if form["max_tokens"].strip():
        if not form["max_tokens"].strip().isdigit():
            raise ValueError("max tokens must be a whole number")
        sample["max_tokens"] = int(form["max_tokens"].strip())
    if form["tools"]:
        sample["tools"] = [_SAMPLE_TOOL]
    if form["structured_output"]:
        sample["response_format"] = {"type": "json_object"}
    if form["stream"]:
        sample["stream"] = True
    return sample


@post(
    [f"{_CUSTOMER_BASE}/{{name:str}}/dry-run", f"{_APP_BASE}/{{name:str}}/dry-run"],
    status_code=200,
)
async def dry_run_route(request: Request[Any, Any, Any]) -> Template:
    """Nothing changes: the route's page again, with which rule and models the sample gets."""
    scope = await _scope(request)
    fields = await read_form(request, scope.viewer)
    name = _name(request)
    form = _sample_form(fields)
    result: dict[str, Any] | None = None
    problem = ""
    try:
        result = await dry_run(services_of(request), scope.owner, name, _sample_request(form))
    except ValueError as error:
        problem = str(error)
    except ApiError as error:
        if error.status == 404:
            raise PageError(404, f"no route {name!r}") from None
        problem = error.message + (f" ({error.param})" if error.param else "")
    context = await _detail_context(
        request, scope, name, sample=form, dry_run=result, dry_run_error=problem
    )
    return page(
        request,
        "routes_detail.html",
        scope.viewer,
        context,
        status_code=200 if result is not None else 400,
        title=f"Route {name}",
    )


TASK_ROUTE_PAGE_HANDLERS = [
    routes_page,
    create_route,
    route_page,
    edit_route,
    remove_route,
    dry_run_route,
]

"""The Playground: a logged-in customer chats with any served model in the browser.

================================================================  ================================
``GET  /console/customer/playground``                             the page: model picker with
                                                                  prices, system prompt, sampling
                                                                  and routing preferences
``POST /console/customer/playground/chat``                        an OpenAI chat request (JSON),
                                                                  answered as ``/v1/chat/
                                                                  completions`` answers it
``GET  /console/customer/playground/generations/{generation_id}`` one of the viewer's
                                                                  generations (JSON), as
                                                                  ``GET /v1/generations/{id}``
================================================================  ================================

The chat endpoint is called by ``static/playground.js`` with ``fetch``: the session cookie says
who, the ``x-csrf-token`` header (the session's token) and the ``Origin`` header say the page
sent it (403 otherwise, before anything is routed or billed). The request then runs through
:func:`coordinator.api.inference.serve_completion` for the viewer's account with the key the
session logged in with: the same routing, holds and billing as the API. Its errors (402, 404,
503...) are the API's JSON bodies, which the script shows. Conversations live only in the page:
nothing of them is stored by the coordinator beyond the usual usage record.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template
from litestar.types import ControllerRouterHandler

from coordinator.api.context import Caller, services_of
from coordinator.api.inference import own_generation, serve_completion
from coordinator.billing import account_money
from coordinator.db.models import Role
from coordinator.web.pages import (
    PageError,
    check_script_request,
    database,
    page,
    require_viewer,
)

__all__ = ["PLAYGROUND_HANDLERS"]

_HOME = "/console/customer/playground"
_NO_STORE = {"cache-control": "no-store", "x-frame-options": "DENY"}


def _models(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """The models served now, with their display names and prices (micro-USD per 1M tokens)."""
    services = services_of(request)
    catalogue = services.catalogue.current
    models = []
    for summary in services.registry.summaries():
        entry = catalogue.get(summary.model)
        models.append(
            {
                "id": summary.model,
                "name": entry.name if entry is not None else summary.model,
                "nodes": summary.nodes,
                "context_length": summary.context_length,
                "input": summary.min_price_input_micro_usd_per_1m,
                "output": summary.min_price_output_micro_usd_per_1m,
            }
        )
    return sorted(models, key=lambda m: str(m["id"]))


@get(_HOME)
async def playground_page(request: Request[Any, Any, Any]) -> Template:
    viewer = await require_viewer(request, Role.CUSTOMER)
    services = services_of(request)
    if services.billing is None:
        raise PageError(503, "billing is not enabled on this coordinator")
    async with database(services)() as session:
        money = await account_money(session, services.billing.gate, viewer.account_id)
    context = {"models": _models(request), "money": money}
    return page(request, "playground.html", viewer, context, title="Playground")


@post(f"{_HOME}/chat", status_code=200)
async def playground_chat(request: Request[Any, Any, Any]) -> Response[Any]:
    """The viewer's chat request, answered by the API's own path (streamed when asked)."""
    viewer = await require_viewer(request, Role.CUSTOMER)
    check_script_request(request, viewer)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise PageError(415, "the Playground sends its requests as application/json")
    caller = Caller(viewer.account_id, "customer", viewer.name, api_key_id=viewer.api_key_id)
    response = await serve_completion(request, chat=True, caller=caller)
    response.headers.update(_NO_STORE)
    return response


@get(f"{_HOME}/generations/{{generation_id:str}}")
async def playground_generation(request: Request[Any, Any, Any]) -> Response[Any]:
    """One of the viewer's generations; another account's is "not found", like an unknown id."""
    viewer = await require_viewer(request, Role.CUSTOMER)
    generation_id = str(request.path_params["generation_id"])
    services = services_of(request)
    if services.billing is None:
        raise PageError(503, "billing is not enabled on this coordinator")
    found = await own_generation(services, viewer.account_id, generation_id)
    if found is None:
        raise PageError(404, f"no generation {generation_id!r} of yours")
    return Response(found, headers=_NO_STORE)


PLAYGROUND_HANDLERS: list[ControllerRouterHandler] = [
    playground_page,
    playground_chat,
    playground_generation,
]

"""The customer console: balance, recent requests with their costs, API keys; and task routes.

==========================================  ===============================================
``GET  /console/customer``                  balance, recent requests, keys, top-ups
``GET  /console/customer/live``             the balance and requests, as a fragment that
                                            ``live.js`` swaps in every few seconds
``POST /console/customer/keys``             a new key: the raw key is on the answer page,
                                            once (never in a URL, never stored)
``POST /console/customer/keys/{id}/revoke`` revoke one of the viewer's keys (404 otherwise)
``/console/customer/routes...``             task routes (:mod:`coordinator.web.task_routes`)
``/console/customer/playground...``         the Playground (:mod:`coordinator.web.playground`)
==========================================  ===============================================

Balances are computed exactly as ``GET /v1/account`` computes them
(:func:`coordinator.billing.account_money`); a request's cost parts are its usage record's, as
``GET /v1/generations/{id}`` shows them. The page is for customer accounts (an operator's key
may make requests too, but its console is the operator's).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template
from litestar.types import ControllerRouterHandler

from coordinator.accounts import KeyNotFound, list_api_keys, revoke_key
from coordinator.accounts.invites import STARTER_CREDIT_REFERENCE
from coordinator.api.context import services_of
from coordinator.api.keys import new_account_key
from coordinator.billing import account_money, recent_generations
from coordinator.db.models import Role, TransferKind
from coordinator.ledger import customer_wallet, list_transfers
from coordinator.web.pages import (
    PageError,
    database,
    page,
    read_form,
    require_live_viewer,
    require_viewer,
    see_other,
)
from coordinator.web.playground import PLAYGROUND_HANDLERS
from coordinator.web.sessions import Viewer
from coordinator.web.task_routes import TASK_ROUTE_PAGE_HANDLERS

__all__ = ["CUSTOMER_HANDLERS"]

_HOME = "/console/customer"
_TOP_UPS_SHOWN = 50


async def _overview(request: Request[Any, Any, Any], viewer: Viewer) -> dict[str, Any]:
    """The balance and the recent requests (what the live fragment refreshes)."""
    services = services_of(request)
    if services.billing is None:
        raise PageError(503, "billing is not enabled on this coordinator")
    async with database(services)() as session:
        money = await account_money(session, services.billing.gate, viewer.account_id)
        generations = await recent_generations(session, viewer.account_id)
    return {"money": money, "generations": generations}


@get(_HOME)
async def customer_page(request: Request[Any, Any, Any]) -> Template:
    viewer = await require_viewer(request, Role.CUSTOMER)
    context = await _overview(request, viewer)
    async with database(services_of(request))() as session:
        keys = await list_api_keys(session, viewer.account_id)
        top_ups = await list_transfers(
            session, ledger_account_id=customer_wallet(viewer.account_id), kind=TransferKind.TOP_UP
        )
    history = [
        {
            "at_ms": top_up.created_at_ms,
            "amount_micro_usd": top_up.amount_micro_usd,
            "source": "starter credit"
            if top_up.reference == STARTER_CREDIT_REFERENCE
            else "operator top-up",
        }
        for top_up in reversed(top_ups[-_TOP_UPS_SHOWN:])
    ]
    context |= {"keys": keys, "top_ups": history}
    return page(request, "customer.html", viewer, context, title="Account")


@get(f"{_HOME}/live")
async def customer_live(request: Request[Any, Any, Any]) -> Template:
    """The overview fragment for ``live.js`` (no page around it)."""
    viewer = await require_live_viewer(request, Role.CUSTOMER)
    return page(request, "customer_live.html", viewer, await _overview(request, viewer))


@post(f"{_HOME}/keys", status_code=200)
async def create_key(request: Request[Any, Any, Any]) -> Template:
    """A new key of the viewer's account, shown on this answer only."""
    viewer = await require_viewer(request, Role.CUSTOMER)
    await read_form(request, viewer)
    async with database(services_of(request)).begin() as session:
        key, raw_key = await new_account_key(session, viewer.account_id)
        context = {"key_id": key.id, "prefix": key.prefix, "raw_key": raw_key}
    return page(request, "customer_key_created.html", viewer, context, title="New API key")


@post(f"{_HOME}/keys/{{key_id:str}}/revoke", status_code=303)
async def revoke_own_key(request: Request[Any, Any, Any]) -> Response[Any]:
    """Revoke one of the viewer's keys; any other id is "not found", like an unknown one."""
    viewer = await require_viewer(request, Role.CUSTOMER)
    await read_form(request, viewer)
    key_id = str(request.path_params["key_id"])
    not_found = PageError(404, f"no API key {key_id!r} of yours")
    if not key_id.startswith("key_"):
        raise not_found
    try:
        async with database(services_of(request)).begin() as session:
            key = await revoke_key(session, key_id, account_id=viewer.account_id)
    except KeyNotFound:
        raise not_found from None
    if key.id == viewer.api_key_id:
        # The session was opened with this key, so it ended with it.
        return see_other(
            "/login",
            notice=f"Key {key.prefix}… is revoked. It was the key you logged in with,"
            " so log in again with another key.",
        )
    return see_other(_HOME, notice=f"Key {key.prefix}… is revoked: requests with it get 401.")


CUSTOMER_HANDLERS: list[ControllerRouterHandler] = [
    customer_page,
    customer_live,
    create_key,
    revoke_own_key,
    *PLAYGROUND_HANDLERS,
    *TASK_ROUTE_PAGE_HANDLERS,
]

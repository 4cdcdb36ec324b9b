"""The coordinator's Litestar application, assembled in one factory.

``create_app(services)`` wires the customer API, the node hub websocket and the node enrollment
endpoints to the services they use. Handlers are thin: they authenticate, parse, call a service
and shape the answer; errors become OpenAI-style bodies in ``coordinator.api.errors``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from typing import Any

from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import HTTPException
from sqlalchemy import text

from coordinator.api.apps import APP_HANDLERS
from coordinator.api.catalogue import CATALOGUE_HANDLERS
from coordinator.api.context import AccountsGateway, Caller, Services, caller_of, services_of
from coordinator.api.errors import (
    ApiError,
    api_error_response,
    http_exception_handler,
    unexpected_error_handler,
)
from coordinator.api.inference import own_generation, serve_completion
from coordinator.api.keys import KEY_HANDLERS
from coordinator.api.market import MARKET_API_HANDLERS
from coordinator.api.middleware import RequestIdMiddleware
from coordinator.api.network_status import network_status
from coordinator.api.operator import OPERATOR_HANDLERS
from coordinator.api.provider import PROVIDER_API_HANDLERS, enrollment_token_of
from coordinator.api.task_routes import TASK_ROUTE_HANDLERS
from coordinator.api.usage import USAGE_HANDLERS
from coordinator.billing import (
    account_money,
    generation_json,
    recent_generations,
)
from coordinator.db import head_revision
from coordinator.hub.hub import PeerGone
from coordinator.observe import CONTENT_TYPE as METRICS_CONTENT_TYPE
from coordinator.web import WEB_EXCEPTION_HANDLERS, template_config, web_handlers
from protocol import EnrollmentStatement, MalformedFrame, PublicKey

__all__ = ["AccountsGateway", "Caller", "Services", "create_app"]

MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024


_services = services_of
_caller = caller_of


async def _completion(request: Request[Any, Any, Any], chat: bool) -> Response[Any]:
    """The bearer key's request, answered by the one inference path (the Playground's too)."""
    return await serve_completion(request, chat=chat)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _completion(request, chat=True)


@post("/v1/completions", status_code=200)
async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _completion(request, chat=False)


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Models served now: catalogued ones by canonical id with their aliases, the rest marked
    uncatalogued under their own names (docs/routing.md)."""
    services = _services(request)
    catalogue = services.catalogue.current
    created = int(time.time())
    data = []
    for summary in services.registry.summaries():
        entry = catalogue.get(summary.model)
        item: dict[str, Any] = {
            "id": summary.model,
            "object": "model",
            "created": created,
            "owned_by": "shareai-network",
            "catalogued": entry is not None,
            "name": entry.name if entry is not None else summary.model,
            "aliases": list(entry.aliases) if entry is not None else [],
            "served_as": list(summary.served_as),
            "nodes": summary.nodes,
            "context_length": summary.context_length,
            "pricing": {
                "unit": "micro-USD per 1M tokens",
                "lowest": {
                    "input": summary.min_price_input_micro_usd_per_1m,
                    "output": summary.min_price_output_micro_usd_per_1m,
                },
                "median": {
                    "input": summary.median_price_input_micro_usd_per_1m,
                    "output": summary.median_price_output_micro_usd_per_1m,
                },
            },
        }
        if entry is not None:
            item |= {
                "family": entry.family,
                "description": entry.description,
                "modalities": entry.modalities.model_dump(),
            }
        data.append(item)
    return {"object": "list", "catalogue_version": services.catalogue.version, "data": data}


@get("/v1/models/{rest:path}")
async def model_endpoints(request: Request[Any, Any, Any], rest: str) -> dict[str, Any]:
    """``GET /v1/models/{model}/endpoints``: per-node offers (model ids may hold ``/``)."""
    model, slash, tail = rest.strip("/").rpartition("/")
    if not slash or tail != "endpoints" or not model:
        raise ApiError(404, f"no such resource: /v1/models{rest}", code="not_found")
    services = _services(request)
    endpoints = services.dispatcher.router.endpoints(model)
    if not endpoints:
        raise ApiError(
            404, f"no node serves the model {model!r}", code="model_not_found", param="model"
        )
    entry = services.catalogue.current.resolve(model)
    return {
        "object": "list",
        "model": entry.id if entry is not None else model,
        "catalogued": entry is not None,
        "data": endpoints,
    }


@get("/v1/hub/info")
async def hub_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    key = _services(request).hub.identity.public_key
    return {
        "coordinator_key": key.to_text(),
        "coordinator_id": key.coordinator_id,
        "hub_path": "/v1/hub",
        "protocol_versions": list(_services(request).hub.settings.session.supported_versions),
    }


@get("/v1/me")
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    caller = await _caller(request)
    return {"account_id": caller.account_id, "role": caller.role, "name": caller.name}


@post("/v1/nodes/enroll", status_code=201)
async def enroll_node(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Bind a node key to a Provider, authorised by a Provider key or by a one-time enrollment
    token from the Provider console (in its place, as the bearer)."""
    token = enrollment_token_of(request)
    caller = await _caller(request) if token is None else None
    if caller is not None and caller.role != "provider":
        raise ApiError(403, "only a Provider key can enroll nodes", code="wrong_role")
    data = await request.json()
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    try:
        node_key = PublicKey.from_text(str(data["node_key"]))
        proof_text = str(data["proof"])
        proof = base64.urlsafe_b64decode(proof_text + "=" * (-len(proof_text) % 4))
        issued_at_ms = _integer(data["issued_at_ms"], "issued_at_ms")
        account_id = str(data["account_id"])
    except KeyError as missing:
        raise ApiError(400, f"missing field {missing}", code="missing_required_parameter") from None
    except (ValueError, TypeError, binascii.Error) as error:
        raise ApiError(400, f"invalid enrollment request: {error}", code="invalid_value") from None
    statement = EnrollmentStatement(
        coordinator_key=_services(request).hub.identity.public_key,
        node_key=node_key,
        account_id=account_id,
        issued_at_ms=issued_at_ms,
    )
    now_ms = int(time.time() * 1000)
    accounts = _services(request).accounts
    if caller is None:
        assert token is not None
        node_id, enrolled_to = await accounts.enroll_node_with_token(
            token, statement, proof, now_ms
        )
        return {"node_id": node_id, "account_id": enrolled_to}
    node_id = await accounts.enroll_node(caller, statement, proof, now_ms)
    return {"node_id": node_id, "account_id": caller.account_id}


def _integer(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    return value


@get("/v1/account")
async def account(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The caller's money: available, held for requests in flight, and recent usage."""
    caller = await _caller(request)
    services = _services(request)
    if services.sessions is None or services.billing is None:
        raise ApiError(404, "billing is not enabled on this coordinator", code="not_found")
    async with services.sessions() as session:
        money = await account_money(session, services.billing.gate, caller.account_id)
        rows = await recent_generations(session, caller.account_id)
    return {
        "object": "account",
        "account_id": caller.account_id,
        "role": caller.role,
        "name": caller.name,
        "balance": {
            "unit": "micro-USD",
            "available": money.available_micro_usd,
            "held": money.held_micro_usd,
            "charged_not_yet_posted": money.charged_not_posted_micro_usd,
        },
        "earnings": {
            "provider_micro_usd": money.provider_earnings_micro_usd,
            "builder_micro_usd": money.builder_earnings_micro_usd,
        },
        "recent_usage": [generation_json(row) for row in rows],
    }


@get("/v1/generations/{generation_id:str}")
async def generation(request: Request[Any, Any, Any], generation_id: str) -> dict[str, Any]:
    """One past request of the caller's: node, model, timings, token counts, itemised cost."""
    caller = await _caller(request)
    found = await own_generation(_services(request), caller.account_id, generation_id)
    if found is None:
        # Someone else's generation is "not found" too: ids are not secrets, usage is.
        raise ApiError(404, f"no generation {generation_id!r} of yours", code="not_found")
    return found


async def _operator(request: Request[Any, Any, Any]) -> Services:
    caller = await _caller(request)
    if caller.role != "operator":
        raise ApiError(403, "only an operator key may see routing internals", code="wrong_role")
    return _services(request)


_MAX_RECENT_ROUTES = 200


@get("/v1/admin/routes")
async def recent_routes(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Operator: the most recent routing decisions, newest first (``?limit=``, default 20)."""
    services = await _operator(request)
    raw = request.query_params.get("limit", "20")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= _MAX_RECENT_ROUTES:
        raise ApiError(
            400,
            f"limit must be an integer from 1 to {_MAX_RECENT_ROUTES}",
            code="invalid_value",
            param="limit",
        )
    records = services.dispatcher.router.routes.recent(int(raw))
    return {"object": "list", "data": [record.to_json() for record in records]}


@get("/v1/admin/routes/{request_id:str}")
async def route_explanation(request: Request[Any, Any, Any], request_id: str) -> dict[str, Any]:
    """Operator: why request ``request_id`` (its ``x-request-id``) went where it went."""
    services = await _operator(request)
    record = services.dispatcher.router.routes.get(request_id)
    if record is None:
        raise ApiError(
            404,
            f"no routing record for {request_id!r} (unknown, or older than the"
            f" {services.dispatcher.router.routes.limit} most recent requests)",
            code="not_found",
        )
    return record.to_json()


@get("/v1/admin/nodes")
async def node_reports(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Operator: what the router knows of every live node (score inputs, uptime, circuits)."""
    services = await _operator(request)
    router = services.dispatcher.router
    reports = [router.node_report(node.node_id) for node in services.registry.all()]
    return {
        "object": "list",
        "data": sorted((r for r in reports if r is not None), key=lambda r: str(r["node"])),
    }


@get("/v1/admin/nodes/{node_id:str}")
async def node_report(request: Request[Any, Any, Any], node_id: str) -> dict[str, Any]:
    """Operator: one node, live or remembered."""
    services = await _operator(request)
    report = services.dispatcher.router.node_report(node_id)
    if report is None:
        raise ApiError(404, f"the router knows nothing of node {node_id!r}", code="not_found")
    return report


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Alive: the process answers (load balancers' liveness check)."""
    return {"status": "ok", "nodes": len(_services(request).registry)}


_head_revision = functools.cache(head_revision)
"""The migration head shipped with this code (read from the scripts once)."""


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ready: the database answers and its schema is at this code's migration head (503 if
    not, saying which)."""
    services = _services(request)
    checks: dict[str, str] = {}
    if services.sessions is None:
        checks["database"] = "ok: none configured (in-process)"
    else:
        try:
            async with services.sessions() as session:
                revision = await session.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception as error:  # unreachable, locked, missing table: not ready, say why
            checks["database"] = f"unavailable: {' '.join(str(error).split())[:200]}"
        else:
            head = _head_revision()
            checks["database"] = "ok"
            checks["migrations"] = (
                "ok" if revision == head else f"at {revision}, this coordinator needs {head}"
            )
    ready = all(value.startswith("ok") for value in checks.values())
    return Response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@get("/metrics", media_type=METRICS_CONTENT_TYPE)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics (no secrets, no per-customer labels; docs/operators.md)."""
    return Response(_services(request).observer.exposition(), media_type=METRICS_CONTENT_TYPE)


@websocket("/v1/hub")
async def node_hub(socket: WebSocket[Any, Any, Any]) -> None:
    services: Services = socket.app.state.services
    await socket.accept()

    async def receive() -> bytes:
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            raise PeerGone
        data = event.get("bytes")
        if not isinstance(data, bytes):
            raise MalformedFrame("text messages are not part of the protocol")
        return data

    async def close(code: int, reason: str) -> None:
        await socket.close(code=code, reason=reason)

    await services.hub.serve(receive, socket.send_bytes, close)


def create_app(services: Services) -> Litestar:
    app = Litestar(
        route_handlers=[
            chat_completions,
            completions,
            list_models,
            model_endpoints,
            hub_info,
            me,
            enroll_node,
            account,
            generation,
            recent_routes,
            route_explanation,
            node_reports,
            node_report,
            healthz,
            readyz,
            network_status,
            metrics,
            node_hub,
            *APP_HANDLERS,
            *CATALOGUE_HANDLERS,
            *PROVIDER_API_HANDLERS,
            *KEY_HANDLERS,
            *OPERATOR_HANDLERS,
            *TASK_ROUTE_HANDLERS,
            *MARKET_API_HANDLERS,
            *USAGE_HANDLERS,
            *web_handlers(),
        ],
        middleware=[RequestIdMiddleware],
        exception_handlers={
            ApiError: api_error_response,
            HTTPException: http_exception_handler,
            Exception: unexpected_error_handler,
            **WEB_EXCEPTION_HANDLERS,
        },
        template_config=template_config(),
        request_max_body_size=MAX_REQUEST_BODY_BYTES,
        openapi_config=None,
    )
    app.state.services = services
    return app

"""The coordinator's Litestar application, assembled in one factory.

``create_app(services)`` wires the customer API, the node hub websocket and the node enrollment
endpoints to the services they use. Handlers are thin: they authenticate, parse, call a service
and shape the answer; errors become OpenAI-style bodies in ``coordinator.api.errors``.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from litestar import Litestar, Request, Response, get, post, websocket
from litestar.connection import WebSocket
from litestar.exceptions import HTTPException

from coordinator.api.completions import CompletionSettings, build_job, respond, route_input
from coordinator.api.errors import (
    ApiError,
    api_error_response,
    http_exception_handler,
    unexpected_error_handler,
)
from coordinator.api.middleware import RequestIdMiddleware
from coordinator.api.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from coordinator.hub.dispatch import Dispatcher
from coordinator.hub.hub import NodeHub, PeerGone
from coordinator.hub.nodes import NodeRegistry
from protocol import EnrollmentStatement, MalformedFrame, PublicKey

__all__ = ["AccountsGateway", "Caller", "Services", "create_app"]

MAX_REQUEST_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: str
    role: Literal["customer", "provider", "builder", "operator"]
    name: str


class AccountsGateway(Protocol):
    """What the web layer needs from accounts (implemented over the database in accounts)."""

    async def authenticate(self, raw_key: str) -> Caller | None: ...

    async def enroll_node(
        self, caller: Caller, statement: EnrollmentStatement, proof: bytes, now_ms: int
    ) -> str:
        """Bind the node key to the caller (a Provider); returns the node id.

        Raises ApiError (400 bad proof, 403 wrong role, 409 key taken) on refusal.
        """
        ...


@dataclass
class Services:
    accounts: AccountsGateway
    hub: NodeHub
    registry: NodeRegistry
    dispatcher: Dispatcher
    completion: CompletionSettings = field(default_factory=CompletionSettings)


_MAY_REQUEST_COMPLETIONS = frozenset({"customer", "builder", "operator"})


def _services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


async def _caller(request: Request[Any, Any, Any]) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    caller = await _services(request).accounts.authenticate(token.strip())
    if caller is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
    return caller


async def _completion(request: Request[Any, Any, Any], chat: bool) -> Response[Any]:
    caller = await _caller(request)
    if caller.role not in _MAY_REQUEST_COMPLETIONS:
        raise ApiError(
            403, f"a {caller.role} key cannot make inference requests", code="wrong_role"
        )
    services = _services(request)
    raw = await request.body()
    body: ChatCompletionRequest | CompletionRequest = (
        parse_body(raw, ChatCompletionRequest) if chat else parse_body(raw, CompletionRequest)
    )
    job = build_job(body, services.completion)
    routing = route_input(body, job, caller.account_id)
    if routing.prefs.model != job.model:  # a :floor / :nitro suffix
        job = job.model_copy(update={"model": routing.prefs.model})
    return await respond(
        services.dispatcher,
        job,
        chat=chat,
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        settings=services.completion,
        headers={},
        routing=routing,
    )


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _completion(request, chat=True)


@post("/v1/completions", status_code=200)
async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _completion(request, chat=False)


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    created = int(time.time())
    data = [
        {
            "id": summary.model,
            "object": "model",
            "created": created,
            "owned_by": "shareai-network",
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
        for summary in _services(request).registry.summaries()
    ]
    return {"object": "list", "data": data}


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
    return {"object": "list", "model": model, "data": endpoints}


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
    caller = await _caller(request)
    if caller.role != "provider":
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
    node_id = await _services(request).accounts.enroll_node(
        caller, statement, proof, int(time.time() * 1000)
    )
    return {"node_id": node_id, "account_id": caller.account_id}


def _integer(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    return value


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"status": "ok", "nodes": len(_services(request).registry)}


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
            healthz,
            node_hub,
        ],
        middleware=[RequestIdMiddleware],
        exception_handlers={
            ApiError: api_error_response,
            HTTPException: http_exception_handler,
            Exception: unexpected_error_handler,
        },
        request_max_body_size=MAX_REQUEST_BODY_BYTES,
        openapi_config=None,
    )
    app.state.services = services
    return app

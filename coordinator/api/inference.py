"""One path for every inference request: authenticate, parse, route, reserve, run, bill.

``POST /v1/chat/completions`` and ``/v1/completions`` (a bearer key) and the console Playground
(``POST /console/customer/playground/chat``, a logged-in session) all answer through
:func:`serve_completion`, so routing preferences, task routes, the worst-case hold and billing are
the same wherever a request comes from. :func:`own_generation` is ``GET /v1/generations/{id}``'s
lookup, shared with the Playground's.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from coordinator.api.completions import (
    build_job,
    name_models,
    respond,
    route_input,
    task_route_headers,
)
from coordinator.api.context import Caller, Services, caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.api.middleware import request_id_of
from coordinator.api.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from coordinator.api.task_routes import apply_task_route
from coordinator.billing import InsufficientCredits, Ticket, generation_json
from coordinator.db.generations import Generation
from coordinator.observe import RequestObservation
from coordinator.routing import RouteInput
from protocol import Job

__all__ = ["MAY_REQUEST_COMPLETIONS", "own_generation", "serve_completion"]

MAY_REQUEST_COMPLETIONS = frozenset({"customer", "builder", "operator"})
"""Roles whose account keys may make inference requests (Providers earn, they do not spend)."""


async def serve_completion(
    request: Request[Any, Any, Any], *, chat: bool, caller: Caller | None = None
) -> Response[Any]:
    """Answer the request's body (an OpenAI chat or completion request) for ``caller``, or for
    the bearer key's account when ``caller`` is None (401 without one).

    Observes the request to its one end; raises :class:`ApiError` (400, 402, 403, 404, 503...)
    for a request that cannot be answered.
    """
    observation = services_of(request).observer.start(request_id_of(request.scope), "")
    try:
        who = caller if caller is not None else await caller_of(request)
        return await _answer(request, chat, who, observation)
    except ApiError as error:
        observation.end(error.code or "error", status=error.status)
        raise
    except Exception:
        observation.end("internal_error", status=500)
        raise


async def _answer(
    request: Request[Any, Any, Any], chat: bool, caller: Caller, observation: RequestObservation
) -> Response[Any]:
    if caller.role not in MAY_REQUEST_COMPLETIONS:
        raise ApiError(
            403, f"a {caller.role} key cannot make inference requests", code="wrong_role"
        )
    services = services_of(request)
    raw = await request.body()
    body: ChatCompletionRequest | CompletionRequest = (
        parse_body(raw, ChatCompletionRequest) if chat else parse_body(raw, CompletionRequest)
    )
    observation.requested_model = body.model
    job = build_job(body, services.completion)
    routing = route_input(body, job, caller.account_id)
    routing.request_id = request_id_of(request.scope)
    await apply_task_route(services, caller, body, job, routing)
    routing.prefs = name_models(routing.prefs, services.catalogue.current)
    if routing.prefs.model != job.model:  # a route, an alias, a :floor / :nitro suffix
        job = job.model_copy(update={"model": routing.prefs.model})
    ticket = await _open_ticket(services, caller, job, routing, chat=chat, requested=body.model)
    return await respond(
        services.dispatcher,
        job,
        chat=chat,
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        settings=services.completion,
        headers=task_route_headers(routing),
        routing=routing,
        ticket=ticket,
        observation=observation,
    )


async def _open_ticket(
    services: Services,
    caller: Caller,
    job: Job,
    routing: RouteInput,
    *,
    chat: bool,
    requested: str,
) -> Ticket | None:
    """Route, then reserve the worst-case cost before any node is used (402 if unaffordable)."""
    billing = services.billing
    if billing is None:
        return None
    decision = services.dispatcher.router.decide(routing.prefs, routing.request)
    routing.decision = decision
    if not decision.candidates:
        return None  # the dispatcher explains why (404/503): nothing to bill
    app = None
    if caller.app_id is not None:
        if services.app_terms is None:
            raise ApiError(403, "app-scoped keys are not enabled here", code="wrong_role")
        app = await services.app_terms(caller.app_id)
    try:
        return await billing.open(
            job,
            decision,
            generation_id=("chatcmpl-" if chat else "cmpl-") + job.job_id.removeprefix("job_"),
            request_id=routing.request_id,
            customer_account_id=caller.account_id,
            api_key_id=caller.api_key_id,
            app=app,
            requested_model=requested,
            task_route=routing.task_route,
        )
    except InsufficientCredits as short:
        raise ApiError(
            402,
            f"{short}; add credits to your account",
            code="insufficient_credits",
        ) from None


async def own_generation(
    services: Services, account_id: str, generation_id: str
) -> dict[str, Any] | None:
    """Generation ``generation_id`` as ``GET /v1/generations/{id}`` shows it (``settled`` false
    while its charge is not yet posted), or None when it is unknown or another account's.

    Raises :class:`ApiError` 404 when billing is not enabled.
    """
    if services.sessions is None or services.billing is None:
        raise ApiError(404, "billing is not enabled on this coordinator", code="not_found")
    pending = services.billing.gate.pending(generation_id)
    if pending is not None and pending.customer_account_id == account_id:
        return pending.to_json()
    async with services.sessions() as session:
        row = await session.get(Generation, generation_id)
    if row is None or row.customer_account_id != account_id:
        return None
    return generation_json(row)

"""The Provider console: nodes, earnings, own prices, enrollment tokens.

===================================================  ============================================
``GET  /console/provider``                           nodes, prices, earnings, payouts, tokens
``GET  /console/provider/live``                      the nodes and totals, as a fragment that
                                                     ``live.js`` swaps in every few seconds
``GET  /console/provider/statement.csv?period=``     a month's statement (one line per day)
``POST /console/provider/prices``                    set an own price for a model (all nodes)
``POST /console/provider/prices/clear``              clear it: each node's own price again
``POST /console/provider/name``                      publish a public name (shown next to the
                                                     ``pv_`` handle on the marketplace)
``POST /console/provider/name/clear``                clear it: anonymous again
``POST /console/provider/tokens``                    a one-time enrollment token, shown on the
                                                     answer page once (never in a URL)
``POST /console/provider/tokens/{id}/revoke``        revoke a pending token of the viewer's
``POST /console/provider/nodes/{id}/revoke``         revoke a node key of the viewer's and close
                                                     its live session
===================================================  ============================================

Everything shown is the viewer's: nodes enrolled under the viewer's account (live state from the
node registry, reputation from the router's books), statements of the viewer's account. A node or
token named in a URL that is not the viewer's is "not found", exactly like one that does not
exist. Prices go through :func:`coordinator.api.provider.set_own_price`, as the JSON API's do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template
from litestar.types import ControllerRouterHandler

from coordinator.accounts import list_nodes, revoke_node
from coordinator.api.context import Services, services_of
from coordinator.api.provider import clear_own_price, node_own_offers, set_own_price
from coordinator.billing.statements import StatementLine, statement, to_csv
from coordinator.db.models import NodeEnrollment, Role, TransferKind
from coordinator.hub.nodes import LiveNode
from coordinator.ledger import (
    InvalidLedgerInput,
    account_balances,
    list_transfers,
    period_bounds_ms,
    provider_earnings,
)
from coordinator.money import format_usd
from coordinator.providers import (
    ENROLLMENT_TOKEN_LIFETIME_MS,
    EnrollmentTokenNotFound,
    ProvidersError,
    clear_public_name,
    create_enrollment_token,
    list_prices,
    pending_enrollment_tokens,
    public_name_of,
    revoke_enrollment_token,
    set_public_name,
)
from coordinator.providers.sync import apply_public_name
from coordinator.routing import provider_handle
from coordinator.web.pages import (
    PageError,
    database,
    page,
    read_form,
    require_live_viewer,
    require_viewer,
    see_other,
)
from coordinator.web.sessions import Viewer

__all__ = ["PROVIDER_HANDLERS", "reputation_reasons"]

_HOME = "/console/provider"
REFRESH_S = 5
_PAYOUTS_SHOWN = 24
_DAY_MS = 86_400_000

_OUTCOMES = (
    ("completion", "completed job", "completed jobs"),
    ("failure", "failure", "failures"),
    ("timeout", "timeout", "timeouts"),
    ("disconnect", "disconnect mid-job", "disconnects mid-job"),
    ("node_cancel", "job the node cancelled", "jobs the node cancelled"),
    ("token_mismatch", "token-count mismatch", "token-count mismatches"),
)


# --- what the page shows ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferRow:
    """One model a node offers: what customers pay now, and what the node itself announced."""

    model: str
    served_as: str
    price_input_micro_usd_per_1m: int
    price_output_micro_usd_per_1m: int
    node_input_micro_usd_per_1m: int
    node_output_micro_usd_per_1m: int
    own_price: bool
    context_length: int
    max_concurrency: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    enrolled_at_ms: int
    online: bool
    suspended_at_ms: int | None
    suspended_reason: str | None
    agent_version: str = ""
    hardware: str = ""
    host: str = ""
    connected_at_ms: int | None = None
    last_heard_s: float | None = None
    heartbeat: str = ""
    in_flight: int = 0
    capacity: int = 0
    offers: tuple[OfferRow, ...] = ()
    reputation: float | None = None
    probation: bool = True
    uptime: float | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One model of the Provider: its own price if set, and the prices its nodes announce."""

    model: str
    own_input_micro_usd_per_1m: int | None
    own_output_micro_usd_per_1m: int | None
    node_prices: tuple[tuple[int, int], ...] = field(default_factory=tuple)
    """Distinct (input, output) prices the live nodes announce for it."""
    nodes: int = 0


def _count(value: float, one: str, many: str) -> str:
    shown = f"{value:.1f}".removesuffix(".0")
    return f"{shown} {one if shown == '1' else many}"


def reputation_reasons(
    report: dict[str, Any] | None, offers: dict[str, Any], *, probation_completions: int
) -> list[str]:
    """Why the router rates a node as it does, in sentences, from :meth:`Router.node_report`
    (``offers``: the node's models by network id, for naming their circuits)."""
    if report is None:
        return ["No jobs observed yet: a node starts at a neutral reputation of 0.50."]
    reputation = report["reputation"]
    inputs: dict[str, float] = reputation["inputs"]
    reasons = []
    seen = [
        _count(inputs[key], one, many) for key, one, many in _OUTCOMES if inputs.get(key, 0) > 0
    ]
    score = reputation["score"]
    if score is None:
        reasons.append("No jobs observed yet: a node starts at a neutral reputation of 0.50.")
    else:
        evidence = ", ".join(seen) if seen else "nothing yet"
        reasons.append(
            f"Reputation {score:.2f} of 1.00 from what the coordinator observed, recent days"
            f" counting most (evidence halves every 24 h): {evidence}. It starts at 0.50;"
            " completed jobs raise it; failures, timeouts and disconnects lower it; a"
            " token-count mismatch counts three times."
        )
    if reputation["probation"]:
        done = int(inputs.get("completions_total", 0))
        reasons.append(
            f"In probation: {done} of {probation_completions} completed jobs so far. Until then"
            " the router sends it only a small share of traffic, to measure it."
        )
    if report.get("uptime") is not None:
        reasons.append(
            f"Uptime {report['uptime'] * 100:.1f} %: the share of time it was connected and"
            " heard from since first seen, recent days counting most."
        )
    for model, measured in sorted(report.get("models", {}).items()):
        if model not in offers:
            continue
        reasons.append(f"{model}: {_model_reason(measured)}")
    return reasons


def _model_reason(measured: dict[str, Any]) -> str:
    parts = []
    samples = int(measured.get("samples") or 0)
    ttft = measured.get("ttft_ms") or {}
    if ttft.get("p50") is not None:
        parts.append(f"first token in {ttft['p50']:.0f} ms (p50), {ttft['p90']:.0f} ms (p90)")
    if measured.get("tokens_per_s_p50") is not None:
        parts.append(f"{measured['tokens_per_s_p50']:.0f} tokens/s")
    parts.append(f"errors {measured['error_rate'] * 100:.1f} %")
    parts.append(f"timeouts {measured['timeout_rate'] * 100:.1f} %")
    measured_text = (
        f"measured over {samples} recent attempts: " + ", ".join(parts)
        if samples
        else "no measurements yet (the router assumes an average node)"
    )
    circuit = measured.get("circuit", "closed")
    if circuit == "open":
        circuit_text = (
            "circuit OPEN after repeated failures: no traffic until a"
            f" {measured.get('circuit_cooldown_s', 0):.0f} s cool-down ends"
        )
    elif circuit == "half_open":
        circuit_text = "circuit half-open: one probe request will decide whether it reopens"
    else:
        circuit_text = "circuit closed (taking traffic)"
    return f"{measured_text}; {circuit_text}."


def _hardware(node: LiveNode) -> tuple[str, str]:
    """(GPUs, host) for people: ``2 x NVIDIA A100 (80 GiB)``; ``16 cores, 64 GiB, Linux``."""
    counts: dict[tuple[str, int], int] = {}
    for gpu in node.hardware.gpus:
        counts[(gpu.name, gpu.memory_mib)] = counts.get((gpu.name, gpu.memory_mib), 0) + 1
    gpus = []
    for (name, memory_mib), count in counts.items():
        size = f"{memory_mib / 1024:.0f} GiB" if memory_mib >= 1024 else f"{memory_mib} MiB"
        gpus.append(f"{count} x {name} ({size})" if count > 1 else f"{name} ({size})")
    hw = node.hardware
    host = f"{hw.cpu_model}, {hw.cpu_cores} cores, {hw.memory_mib / 1024:.0f} GiB, {hw.os}"
    return (", ".join(gpus) or "no GPU reported"), host


def _heartbeat(node: LiveNode) -> str:
    beat = node.heartbeat
    if beat is None:
        return "no heartbeat yet"
    text = f"{beat.active_jobs} active, {beat.free_slots} free slots, CPU {beat.cpu_pct:.0f} %"
    utilisation = [g.utilization_pct for g in beat.gpus if g.utilization_pct is not None]
    if utilisation:
        text += ", GPU " + " / ".join(f"{u:.0f} %" for u in utilisation)
    return text


def _node_row(services: Services, enrollment: NodeEnrollment) -> NodeRow:
    router = services.dispatcher.router
    node = services.registry.get(enrollment.node_id)
    report = router.node_report(enrollment.node_id)
    common: dict[str, Any] = {
        "node_id": enrollment.node_id,
        "enrolled_at_ms": enrollment.enrolled_at_ms,
        "suspended_at_ms": enrollment.suspended_at_ms,
        "suspended_reason": enrollment.suspended_reason,
    }
    probation_completions = router.reputation.probation_completions
    if node is None:
        return NodeRow(
            online=False,
            reputation=report["reputation"]["score"] if report else None,
            probation=bool(report["reputation"]["probation"]) if report else True,
            uptime=report["uptime"] if report else None,
            reasons=tuple(
                reputation_reasons(report, {}, probation_completions=probation_completions)
            ),
            **common,
        )
    own = node_own_offers(services, node)
    priced = services.registry.price_overrides(node.provider_account_id)
    offers = []
    for model, offer in sorted(node.offers.items()):
        announced = own.get(model, offer)
        offers.append(
            OfferRow(
                model=model,
                served_as=offer.model,
                price_input_micro_usd_per_1m=offer.price_input_micro_usd_per_1m,
                price_output_micro_usd_per_1m=offer.price_output_micro_usd_per_1m,
                node_input_micro_usd_per_1m=announced.price_input_micro_usd_per_1m,
                node_output_micro_usd_per_1m=announced.price_output_micro_usd_per_1m,
                own_price=model in priced,
                context_length=offer.context_length,
                max_concurrency=offer.max_concurrency,
                in_flight=node.in_flight.get(model, 0),
            )
        )
    gpus, host = _hardware(node)
    return NodeRow(
        online=True,
        agent_version=node.agent_version,
        hardware=gpus,
        host=host,
        connected_at_ms=int(node.connected_at_s * 1000),
        last_heard_s=time.monotonic() - node.last_seen_s,
        heartbeat=_heartbeat(node),
        in_flight=sum(node.in_flight.values()),
        capacity=sum(offer.max_concurrency for offer in node.offers.values()),
        offers=tuple(offers),
        reputation=report["reputation"]["score"] if report else None,
        probation=bool(report["reputation"]["probation"]) if report else True,
        uptime=report["uptime"] if report else None,
        reasons=tuple(
            reputation_reasons(report, node.offers, probation_completions=probation_completions)
        ),
        **common,
    )


async def _nodes(request: Request[Any, Any, Any], viewer: Viewer) -> dict[str, Any]:
    """The viewer's nodes (what the live fragment refreshes), online ones first."""
    services = services_of(request)
    async with database(services)() as session:
        enrolled = await list_nodes(session, viewer.account_id)
    active = [row for row in enrolled if row.revoked_at_ms is None]
    nodes = sorted(
        (_node_row(services, enrollment) for enrollment in active),
        key=lambda row: (not row.online, row.node_id),
    )
    online = [node for node in nodes if node.online]
    return {
        "nodes": nodes,
        "online": len(online),
        "in_flight": sum(node.in_flight for node in online),
        "capacity": sum(node.capacity for node in online),
        "revoked": [row for row in enrolled if row.revoked_at_ms is not None],
        "refresh_s": REFRESH_S,
    }


def _price_rows(
    services: Services, account_id: str, own: dict[str, tuple[int, int]]
) -> list[PriceRow]:
    announced: dict[str, set[tuple[int, int]]] = {}
    nodes: dict[str, int] = {}
    for node in services.registry.all():
        if node.provider_account_id != account_id:
            continue
        for model, offer in node_own_offers(services, node).items():
            announced.setdefault(model, set()).add(
                (offer.price_input_micro_usd_per_1m, offer.price_output_micro_usd_per_1m)
            )
            nodes[model] = nodes.get(model, 0) + 1
    return [
        PriceRow(
            model=model,
            own_input_micro_usd_per_1m=own[model][0] if model in own else None,
            own_output_micro_usd_per_1m=own[model][1] if model in own else None,
            node_prices=tuple(sorted(announced.get(model, ()))),
            nodes=nodes.get(model, 0),
        )
        for model in sorted(set(announced) | set(own))
    ]


def _month_start_ms(now_ms: int) -> int:
    day = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return int(day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def _period_of(request: Request[Any, Any, Any], now_ms: int) -> str:
    period = request.query_params.get("period", "")
    if not period:
        return datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m")
    try:
        start_ms, _ = period_bounds_ms(period)
    except InvalidLedgerInput as error:
        raise PageError(400, str(error)) from None
    if start_ms > now_ms:
        raise PageError(400, f"{period} has not started yet")
    return period


async def _daily_lines(
    services: Services, account_id: str, period: str, now_ms: int
) -> list[StatementLine]:
    """The statement of ``period``: one line per UTC day with traffic, up to now."""
    start_ms, end_ms = period_bounds_ms(period)
    lines: list[StatementLine] = []
    async with database(services)() as session:
        for day_ms in range(start_ms, min(end_ms, now_ms + 1), _DAY_MS):
            lines += await statement(
                session, "provider", day_ms, day_ms + _DAY_MS, account_id=account_id
            )
    return lines


async def _earnings(services: Services, account_id: str, now_ms: int) -> dict[str, int]:
    today_ms = now_ms - now_ms % _DAY_MS
    async with database(services)() as session:
        today = await statement(session, "provider", today_ms, now_ms + 1, account_id=account_id)
        month = await statement(
            session, "provider", _month_start_ms(now_ms), now_ms + 1, account_id=account_id
        )
        balances = await account_balances(session, account_id)
    return {
        "today": sum(line.net_micro_usd for line in today),
        "today_requests": sum(line.requests for line in today),
        "month": sum(line.net_micro_usd for line in month),
        "month_requests": sum(line.requests for line in month),
        "unpaid": balances.provider_earnings_micro_usd,
    }


def _coordinator_url(request: Request[Any, Any, Any]) -> str:
    """This coordinator's URL as the browser reached it (what a node should be told)."""
    base = str(request.base_url).rstrip("/")
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if forwarded == "https" and base.startswith("http://"):
        base = "https://" + base.removeprefix("http://")
    return base


# --- pages -----------------------------------------------------------------------------------


@get(_HOME)
async def provider_page(request: Request[Any, Any, Any]) -> Template:
    viewer = await require_viewer(request, Role.PROVIDER)
    services = services_of(request)
    now_ms = time.time_ns() // 1_000_000
    period = _period_of(request, now_ms)
    context = await _nodes(request, viewer)
    async with database(services)() as session:
        prices = await list_prices(session, viewer.account_id)
        tokens = await pending_enrollment_tokens(session, viewer.account_id, now_ms=now_ms)
        public_name = await public_name_of(session, viewer.account_id)
        payouts = await list_transfers(
            session,
            ledger_account_id=provider_earnings(viewer.account_id),
            kind=TransferKind.PAYOUT,
        )
    own = {p.model: (p.input_micro_usd_per_1m, p.output_micro_usd_per_1m) for p in prices}
    lines = await _daily_lines(services, viewer.account_id, period, now_ms)
    context |= {
        "earnings": await _earnings(services, viewer.account_id, now_ms),
        "prices": _price_rows(services, viewer.account_id, own),
        "period": period,
        "lines": lines,
        "totals": {
            "requests": sum(line.requests for line in lines),
            "prompt_tokens": sum(line.prompt_tokens for line in lines),
            "completion_tokens": sum(line.completion_tokens for line in lines),
            "gross": sum(line.gross_micro_usd for line in lines),
            "fees": sum(line.fees_micro_usd for line in lines),
            "net": sum(line.net_micro_usd for line in lines),
        },
        "payouts": [
            {
                "period": payout.id.split("#")[1] if payout.id.count("#") >= 2 else "",
                "amount": payout.amount_micro_usd,
                "at_ms": payout.created_at_ms,
                "id": payout.id,
            }
            for payout in reversed(payouts[-_PAYOUTS_SHOWN:])
        ],
        "tokens": tokens,
        "public_name": public_name,
        "handle": provider_handle(viewer.account_id),
        "format_usd": format_usd,
    }
    return page(request, "provider.html", viewer, context, title="My nodes")


@get(f"{_HOME}/live")
async def provider_live(request: Request[Any, Any, Any]) -> Template:
    """The nodes fragment for ``live.js`` (no page around it)."""
    viewer = await require_live_viewer(request, Role.PROVIDER)
    return page(request, "provider_live.html", viewer, await _nodes(request, viewer))


@get(f"{_HOME}/statement.csv")
async def statement_csv(request: Request[Any, Any, Any]) -> Response[str]:
    """The month's statement as CSV, one line per UTC day with traffic."""
    viewer = await require_viewer(request, Role.PROVIDER)
    now_ms = time.time_ns() // 1_000_000
    period = _period_of(request, now_ms)
    lines = await _daily_lines(services_of(request), viewer.account_id, period, now_ms)
    return Response(
        to_csv(lines),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="shareai-provider-{period}.csv"',
            "cache-control": "no-store",
        },
    )


@post(f"{_HOME}/prices", status_code=303)
async def set_price_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """Set the viewer's own price for a model, on all of the viewer's nodes, for new jobs."""
    viewer = await require_viewer(request, Role.PROVIDER)
    fields = await read_form(request, viewer)
    model = fields.get("model", "").strip()
    if not model:
        raise PageError(400, "name the model to price")
    try:
        stored = await set_own_price(
            services_of(request),
            viewer.account_id,
            model,
            fields.get("input_usd_per_1m", ""),
            fields.get("output_usd_per_1m", ""),
        )
    except ProvidersError as error:
        raise PageError(400, str(error)) from None
    return see_other(
        _HOME,
        notice=f"Your price for {stored.model} is now ${format_usd(stored.input_micro_usd_per_1m)}"
        f" in / ${format_usd(stored.output_micro_usd_per_1m)} out per 1M tokens on all your"
        " nodes, for new requests.",
    )


@post(f"{_HOME}/prices/clear", status_code=303)
async def clear_price_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """Clear the viewer's own price for a model: each node's own price applies again."""
    viewer = await require_viewer(request, Role.PROVIDER)
    fields = await read_form(request, viewer)
    try:
        model, cleared = await clear_own_price(
            services_of(request), viewer.account_id, fields.get("model", "").strip()
        )
    except ProvidersError as error:
        raise PageError(400, str(error)) from None
    if not cleared:
        raise PageError(404, f"you set no price of your own for {model!r}")
    return see_other(
        _HOME, notice=f"Your price for {model} is cleared: each node's own price applies again."
    )


@post(f"{_HOME}/name", status_code=303)
async def set_public_name_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """Publish the viewer's public name; the marketplace shows it at once."""
    viewer = await require_viewer(request, Role.PROVIDER)
    fields = await read_form(request, viewer)
    services = services_of(request)
    sessions = database(services)
    try:
        async with sessions.begin() as session:
            name = await set_public_name(session, viewer.account_id, fields.get("public_name", ""))
    except ProvidersError as error:
        raise PageError(400, str(error)) from None
    await apply_public_name(services.registry, sessions, viewer.account_id)
    return see_other(
        _HOME,
        notice=f"Your public name is now {name!r}: the marketplace shows it next to"
        f" {provider_handle(viewer.account_id)}.",
    )


@post(f"{_HOME}/name/clear", status_code=303)
async def clear_public_name_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """Clear the viewer's public name: shown by the anonymous handle only again."""
    viewer = await require_viewer(request, Role.PROVIDER)
    await read_form(request, viewer)
    services = services_of(request)
    sessions = database(services)
    async with sessions.begin() as session:
        cleared = await clear_public_name(session, viewer.account_id)
    await apply_public_name(services.registry, sessions, viewer.account_id)
    if not cleared:
        raise PageError(404, "you have no public name to clear")
    return see_other(
        _HOME, notice="Your public name is cleared: the marketplace shows only your handle again."
    )


@post(f"{_HOME}/tokens", status_code=200)
async def create_token_form(request: Request[Any, Any, Any]) -> Template:
    """A one-time enrollment token, shown on this answer only, with the command to run."""
    viewer = await require_viewer(request, Role.PROVIDER)
    await read_form(request, viewer)
    try:
        async with database(services_of(request)).begin() as session:
            raw, token = await create_enrollment_token(session, viewer.account_id)
            context = {
                "token": raw,
                "token_id": token.id,
                "prefix": token.prefix,
                "expires_at_ms": token.expires_at_ms,
                "lifetime_min": ENROLLMENT_TOKEN_LIFETIME_MS // 60_000,
                "coordinator_url": _coordinator_url(request),
            }
    except ProvidersError as error:
        raise PageError(409, str(error)) from None
    return page(request, "provider_token_created.html", viewer, context, title="Enroll a node")


@post(f"{_HOME}/tokens/{{token_id:str}}/revoke", status_code=303)
async def revoke_token_form(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await require_viewer(request, Role.PROVIDER)
    await read_form(request, viewer)
    token_id = str(request.path_params["token_id"])
    try:
        async with database(services_of(request)).begin() as session:
            token = await revoke_enrollment_token(session, viewer.account_id, token_id)
            prefix = token.prefix
    except EnrollmentTokenNotFound:
        raise PageError(404, f"no pending enrollment token {token_id!r} of yours") from None
    return see_other(_HOME, notice=f"Enrollment token {prefix}… is revoked: it enrolls nothing.")


@post(f"{_HOME}/nodes/{{node_id:str}}/revoke", status_code=303)
async def revoke_node_form(request: Request[Any, Any, Any]) -> Response[Any]:
    """Revoke one of the viewer's node keys for good and close its live session now."""
    viewer = await require_viewer(request, Role.PROVIDER)
    await read_form(request, viewer)
    node_id = str(request.path_params["node_id"])
    services = services_of(request)
    async with database(services).begin() as session:
        enrollment = await session.get(NodeEnrollment, node_id)
        if enrollment is None or enrollment.account_id != viewer.account_id:
            raise PageError(404, f"no node {node_id!r} of yours")
        await revoke_node(session, node_id, by=viewer.account_id)
    closed = await services.hub.revoke(node_id)
    return see_other(
        _HOME,
        notice=f"Node {node_id} is revoked"
        + (": its session was closed" if closed else "")
        + ". Its key can never connect again; enroll a new key to bring the machine back.",
    )


PROVIDER_HANDLERS: list[ControllerRouterHandler] = [
    provider_page,
    provider_live,
    statement_csv,
    set_price_form,
    clear_price_form,
    set_public_name_form,
    clear_public_name_form,
    create_token_form,
    revoke_token_form,
    revoke_node_form,
]

"""The public network status page and the operator's console.

Both pages show what :func:`coordinator.api.network_status.network_numbers` computes, the same
numbers ``GET /v1/network/status`` answers with, so the page and the JSON never disagree:

- ``GET /status`` (public, no login): nodes by node id and anonymised Provider handle, models,
  traffic with charts, settlement totals. ``GET /status/live`` is the part that refreshes
  itself (``data-live``; see ``static/live.js``).
- ``GET /console/operator`` (operator accounts): the same plus what only the operator may see,
  the Provider account behind each node and its suspension, and the operator's actions:
  suspend or restore a node, top up an account. ``GET /console/operator/live`` refreshes it.

The action forms stay outside the refreshing part, so a reason being typed is never replaced.
A top-up form carries a transfer id made when the page was drawn: sending the same form twice
tops up once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, get, post
from litestar.types import ControllerRouterHandler
from markupsafe import Markup
from sqlalchemy import select

from coordinator.accounts import (
    AccountNotFound,
    AccountsError,
    NodeEnrollment,
    NodeNotFound,
    Role,
    RoleNotAllowed,
    list_accounts,
    suspended_nodes,
)
from coordinator.api.context import Services, services_of
from coordinator.api.network_status import network_numbers
from coordinator.api.operator import new_top_up_id, restore, suspend, top_up
from coordinator.db.models import Account
from coordinator.ledger import IdConflict, LedgerError
from coordinator.money import InvalidUsdAmount, format_usd, parse_usd
from coordinator.web.charts import Series, line_chart
from coordinator.web.filters import NONE
from coordinator.web.pages import (
    PageError,
    database,
    page,
    read_form,
    require_live_viewer,
    require_viewer,
    see_other,
    viewer_or_none,
)

__all__ = ["STATUS_HANDLERS", "hardware", "traffic_charts"]

REFRESH_S = 5
"""How often the live part of a status page refreshes itself, in seconds."""

_OPERATOR_HOME = "/console/operator"


# --- what the templates show ---------------------------------------------------------------------


def hardware(gpus: Sequence[Mapping[str, Any]]) -> str:
    """A node's GPUs for people: ``2 x NVIDIA A100 (80 GiB)``; identical GPUs are counted."""
    if not gpus:
        return "no GPU reported"
    counts: dict[tuple[str, int], int] = {}
    for gpu in gpus:
        key = (str(gpu["name"]), int(gpu["memory_mib"]))
        counts[key] = counts.get(key, 0) + 1
    shown = []
    for (name, memory_mib), count in counts.items():
        size = f"{memory_mib / 1024:.0f} GiB" if memory_mib >= 1024 else f"{memory_mib} MiB"
        shown.append(f"{count} x {name} ({size})" if count > 1 else f"{name} ({size})")
    return ", ".join(shown)


def _number(value: float | None) -> str:
    """``1234.5`` as ``1,234.5``; integers without decimals."""
    if value is None:
        return NONE
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:,.0f} ms"


def _share(ratio: float | None) -> str:
    """A ratio in [0, 1] as a percentage (``0.0125`` as ``1.3 %``)."""
    if ratio is None:
        return NONE
    return f"{ratio * 100:.1f} %".replace(".0 %", " %")


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M", time.gmtime(epoch_s))


def traffic_charts(per_minute: Sequence[Mapping[str, Any]]) -> list[Markup]:
    """The last hour's charts: requests per minute, tokens per minute, latency."""
    if not per_minute:
        return []
    starts = [float(minute["minute_start_s"]) for minute in per_minute]
    labels = [_clock(starts[0]), _clock(starts[len(starts) // 2]), _clock(starts[-1]) + " UTC"]

    def column(name: str) -> list[float | None]:
        return [None if minute[name] is None else float(minute[name]) for minute in per_minute]

    return [
        line_chart(
            "Requests per minute", [Series("requests", column("requests"))], x_labels=labels
        ),
        line_chart("Tokens per minute", [Series("tokens", column("tokens"))], x_labels=labels),
        line_chart(
            "Latency",
            [
                Series("time to first token p50", column("ttft_ms_p50")),
                Series("mean latency", column("latency_ms_mean")),
            ],
            x_labels=labels,
            unit="ms",
        ),
    ]


@dataclass(frozen=True, slots=True)
class _Suspension:
    at_ms: int
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class _OperatorView:
    """What only the operator sees: whose each node is and which nodes are suspended."""

    providers: dict[str, Account]
    """Node id -> the Provider account that runs it (live nodes and suspended ones)."""
    suspended: dict[str, _Suspension]
    suspended_offline: list[str]
    """Suspended nodes not connected now (to restore them all the same)."""


async def _operator_view(services: Services, nodes: Mapping[str, Any]) -> _OperatorView:
    """The operator's extras for the nodes of ``network_numbers(...)["nodes"]``."""
    live = {node["node"] for node in nodes["live"]}
    offline = {node["node"] for node in nodes["recently_offline"]}
    owners = {
        node.node_id: node.provider_account_id
        for node in services.registry.all()
        if node.node_id in live
    }
    async with database(services)() as session:
        suspended = await suspended_nodes(session)
        owners |= {row.node_id: row.account_id for row in suspended}
        if offline - owners.keys():
            rows = await session.execute(
                select(NodeEnrollment.node_id, NodeEnrollment.account_id).where(
                    NodeEnrollment.node_id.in_(offline - owners.keys())
                )
            )
            owners |= {str(row.node_id): str(row.account_id) for row in rows}
        accounts = {
            account.id: account
            for account in (
                await session.scalars(select(Account).where(Account.id.in_(set(owners.values()))))
            ).all()
        }
    return _OperatorView(
        providers={
            node_id: accounts[owner] for node_id, owner in owners.items() if owner in accounts
        },
        suspended={row.node_id: _suspension(row) for row in suspended},
        suspended_offline=[row.node_id for row in suspended if row.node_id not in live],
    )


def _suspension(row: NodeEnrollment) -> _Suspension:
    assert row.suspended_at_ms is not None  # suspended_nodes returns only these
    return _Suspension(row.suspended_at_ms, row.suspended_by or "", row.suspended_reason or "")


async def _live_context(services: Services, *, operator: bool) -> dict[str, Any]:
    numbers = await network_numbers(services)
    return {
        "numbers": numbers,
        "charts": traffic_charts(numbers["traffic"]["per_minute"]),
        "operator": await _operator_view(services, numbers["nodes"]) if operator else None,
        "hardware": hardware,
        "number": _number,
        "ms": _ms,
        "share": _share,
        "dash": NONE,
        "refresh_s": REFRESH_S,
    }


# --- the public page -----------------------------------------------------------------------------


@get("/status")
async def public_status(request: Request[Any, Any, Any]) -> Response[Any]:
    """The network's live numbers for anyone: no account details."""
    viewer = await viewer_or_none(request)
    context = await _live_context(services_of(request), operator=False)
    return page(request, "status.html", viewer, context, title="Network status")


@get("/status/live")
async def public_status_live(request: Request[Any, Any, Any]) -> Response[Any]:
    """The refreshing part of ``/status`` (an HTML fragment)."""
    context = await _live_context(services_of(request), operator=False)
    return page(request, "_status_live.html", None, context)


# --- the operator's console ----------------------------------------------------------------------


async def _may_top_up(services: Services) -> list[Account]:
    """Accounts that spend credits (customers, Builders, operators), oldest first."""
    async with database(services)() as session:
        accounts = await list_accounts(session)
    return [account for account in accounts if account.role is not Role.PROVIDER]


@get(_OPERATOR_HOME)
async def operator_console(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await require_viewer(request, Role.OPERATOR)
    services = services_of(request)
    context = await _live_context(services, operator=True)
    live_nodes = [node["node"] for node in context["numbers"]["nodes"]["live"]]
    operator: _OperatorView = context["operator"]
    context |= {
        "suspendable": [node for node in live_nodes if node not in operator.suspended],
        "restorable": sorted(operator.suspended),
        "top_up_accounts": await _may_top_up(services),
        "transfer_id": new_top_up_id(),
    }
    return page(request, "operator.html", viewer, context, title="Network (operator)")


@get(_OPERATOR_HOME + "/live")
async def operator_console_live(request: Request[Any, Any, Any]) -> Response[Any]:
    """The refreshing part of the operator's console. Without a live operator session it
    answers an error status (never the login page), so the page marks its numbers stale."""
    viewer = await require_live_viewer(request, Role.OPERATOR)
    context = await _live_context(services_of(request), operator=True)
    return page(request, "_status_live.html", viewer, context)


def _page_error(error: AccountsError | LedgerError) -> PageError:
    if isinstance(error, (NodeNotFound, AccountNotFound)):
        return PageError(404, str(error))
    if isinstance(error, RoleNotAllowed):
        return PageError(403, str(error))
    if isinstance(error, IdConflict):
        return PageError(
            409, "that top-up form was already used for another amount or account; reload the page"
        )
    return PageError(400, str(error))


def _required(fields: Mapping[str, str], name: str, what: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise PageError(400, f"choose {what}")
    return value


@post(_OPERATOR_HOME + "/nodes/suspend", status_code=303)
async def suspend_node_form(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await require_viewer(request, Role.OPERATOR)
    fields = await read_form(request, viewer)
    node_id = _required(fields, "node_id", "a node to suspend")
    try:
        await suspend(
            services_of(request), node_id, by=viewer.account_id, reason=fields.get("reason", "")
        )
    except AccountsError as error:
        raise _page_error(error) from None
    return see_other(
        _OPERATOR_HOME,
        f"Node {node_id} is suspended: it gets no new jobs (running jobs finish).",
    )


@post(_OPERATOR_HOME + "/nodes/restore", status_code=303)
async def restore_node_form(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await require_viewer(request, Role.OPERATOR)
    fields = await read_form(request, viewer)
    node_id = _required(fields, "node_id", "a node to restore")
    try:
        await restore(services_of(request), node_id, by=viewer.account_id)
    except AccountsError as error:
        raise _page_error(error) from None
    return see_other(_OPERATOR_HOME, f"Node {node_id} is restored: it takes new jobs again.")


@post(_OPERATOR_HOME + "/credits", status_code=303)
async def top_up_form(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await require_viewer(request, Role.OPERATOR)
    fields = await read_form(request, viewer)
    account_id = _required(fields, "account_id", "an account to top up")
    transfer_id = _required(fields, "transfer_id", "a transfer id (reload the page)")
    try:
        micro_usd = parse_usd(fields.get("amount_usd", "").strip())
    except InvalidUsdAmount as error:
        raise PageError(400, str(error)) from None
    try:
        done = await top_up(services_of(request), account_id, micro_usd, transfer_id=transfer_id)
    except (AccountsError, LedgerError) as error:
        raise _page_error(error) from None
    if not done.applied:
        return see_other(
            _OPERATOR_HOME,
            f"That top-up was already made ({transfer_id}); nothing was added again.",
        )
    return see_other(
        _OPERATOR_HOME,
        f"Added ${format_usd(micro_usd)} to {account_id} ({transfer_id}).",
    )


STATUS_HANDLERS: list[ControllerRouterHandler] = [
    public_status,
    public_status_live,
    operator_console,
    operator_console_live,
    suspend_node_form,
    restore_node_form,
    top_up_form,
]

"""The operator's actions on the live network: suspend and restore nodes, top up accounts.

The actions are functions over :class:`Services` shared by the JSON API below and the operator's
console (:mod:`coordinator.web.status`): each writes the database in one transaction and then
marks this process's live node, so the next routing decision sees it. They raise the services'
typed errors (:class:`~coordinator.accounts.AccountsError`,
:class:`~coordinator.ledger.LedgerError`); each edge turns them into its own errors.

The JSON API, for an ``operator`` key (others get ``403 wrong_role``):

- ``POST /v1/admin/nodes/{node_id}/suspend`` with ``{"reason": "..."}``: no new jobs for the
  node (it stays connected; running jobs finish). Suspending a suspended node changes nothing.
- ``POST /v1/admin/nodes/{node_id}/restore``: the node takes jobs again.
- ``POST /v1/admin/accounts/{account_id}/credits`` with ``{"amount_usd": "12.50"}`` (or
  ``"amount_micro_usd"``) and an optional ``"transfer_id"``: a top-up that happens once per
  transfer id, so a retried request never tops up twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from litestar import Request, post
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.accounts import (
    AccountNotFound,
    AccountsError,
    InvalidAccountInput,
    NodeEnrollment,
    NodeNotFound,
    Revoker,
    RoleNotAllowed,
    add_credits,
    restore_node,
    suspend_node,
)
from coordinator.accounts.keys import random_id
from coordinator.api.bodies import read_json_object
from coordinator.api.context import Caller, Services, caller_of, services_of
from coordinator.api.errors import ApiError
from coordinator.ledger import IdConflict, LedgerError, get_transfer
from coordinator.money import InvalidUsdAmount, parse_usd

__all__ = [
    "OPERATOR_HANDLERS",
    "TOP_UP_PREFIX",
    "TopUp",
    "new_top_up_id",
    "restore",
    "suspend",
    "top_up",
]

TOP_UP_PREFIX = "topup_op_"
"""Transfer ids of the operator's top-ups start with this (a caller-chosen id cannot collide
with the ledger's own transfers)."""

_TOP_UP_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def new_top_up_id() -> str:
    """A fresh transfer id for one top-up (a console form carries it, so a resubmitted form
    names the same top-up)."""
    return random_id(TOP_UP_PREFIX)


def _sessions(services: Services) -> async_sessionmaker[AsyncSession]:
    if services.sessions is None:
        raise ApiError(404, "accounts are not enabled on this coordinator", code="not_found")
    return services.sessions


async def suspend(services: Services, node_id: str, *, by: Revoker, reason: str) -> NodeEnrollment:
    """Suspend ``node_id`` in the database, then keep this process's live node from new jobs.
    Raises like :func:`coordinator.accounts.suspend_node`."""
    async with _sessions(services).begin() as session:
        enrollment = await suspend_node(session, node_id, by=by, reason=reason)
    services.registry.set_suspended(node_id, True)
    return enrollment


async def restore(services: Services, node_id: str, *, by: Revoker) -> NodeEnrollment:
    """Lift the suspension in the database, then on this process's live node."""
    async with _sessions(services).begin() as session:
        enrollment = await restore_node(session, node_id, by=by)
    services.registry.set_suspended(node_id, False)
    return enrollment


@dataclass(frozen=True, slots=True)
class TopUp:
    """A top-up's outcome: ``applied`` is False when its transfer id had been used already
    (a resubmitted form, a retried request): nothing was added this time."""

    account_id: str
    amount_micro_usd: int
    transfer_id: str
    applied: bool
    available_micro_usd: int


async def top_up(services: Services, account_id: str, micro_usd: int, *, transfer_id: str) -> TopUp:
    """Add ``micro_usd`` to the account's wallet, once per ``transfer_id`` (which must start
    with :data:`TOP_UP_PREFIX`). Raises :class:`InvalidAccountInput` (bad amount or id),
    :class:`AccountNotFound`, and :class:`~coordinator.ledger.IdConflict` when the id was used
    for another account or amount."""
    if not transfer_id.startswith(TOP_UP_PREFIX) or _TOP_UP_ID.fullmatch(transfer_id) is None:
        raise InvalidAccountInput(
            f"a top-up's transfer id is {TOP_UP_PREFIX} followed by letters, digits, _ or -"
            " (64 characters at most)"
        )
    async with _sessions(services).begin() as session:
        seen = await get_transfer(session, transfer_id) is not None
        available = await add_credits(session, account_id, micro_usd, transfer_id=transfer_id)
    return TopUp(account_id, micro_usd, transfer_id, not seen, available)


# --- the JSON API --------------------------------------------------------------------------------


async def _operator_caller(request: Request[Any, Any, Any]) -> Caller:
    caller = await caller_of(request)
    if caller.role != "operator" or caller.app_id is not None:
        raise ApiError(
            403, f"only an operator key may do this; this is a {caller.role} key", code="wrong_role"
        )
    return caller


def _api_error(error: AccountsError | LedgerError) -> ApiError:
    if isinstance(error, (NodeNotFound, AccountNotFound)):
        return ApiError(404, str(error), code="not_found")
    if isinstance(error, RoleNotAllowed):
        return ApiError(403, str(error), code="wrong_role")
    if isinstance(error, IdConflict):
        return ApiError(409, str(error), code="transfer_id_conflict", param="transfer_id")
    return ApiError(400, str(error), code="invalid_value")


def _node_json(services: Services, enrollment: NodeEnrollment) -> dict[str, Any]:
    return {
        "object": "node.suspension",
        "node": enrollment.node_id,
        "account_id": enrollment.account_id,
        "suspended": enrollment.suspended_at_ms is not None,
        "suspended_at_ms": enrollment.suspended_at_ms,
        "suspended_by": enrollment.suspended_by,
        "reason": enrollment.suspended_reason,
        "live": services.registry.get(enrollment.node_id) is not None,
    }


@post("/v1/admin/nodes/{node_id:str}/suspend", status_code=200)
async def suspend_node_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Operator: ``{"reason": "..."}`` -> the node's suspension (no new jobs from now on)."""
    caller = await _operator_caller(request)
    data = await read_json_object(request, frozenset({"reason"}))
    reason = data.get("reason")
    if not isinstance(reason, str):
        raise ApiError(
            400,
            "reason must be a string: why the node is suspended",
            code="invalid_value",
            param="reason",
        )
    services = services_of(request)
    try:
        enrollment = await suspend(
            services, str(request.path_params["node_id"]), by=caller.account_id, reason=reason
        )
    except AccountsError as error:
        raise _api_error(error) from None
    return _node_json(services, enrollment)


@post("/v1/admin/nodes/{node_id:str}/restore", status_code=200)
async def restore_node_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Operator: lift the node's suspension (no body)."""
    caller = await _operator_caller(request)
    services = services_of(request)
    try:
        enrollment = await restore(
            services, str(request.path_params["node_id"]), by=caller.account_id
        )
    except AccountsError as error:
        raise _api_error(error) from None
    return _node_json(services, enrollment)


def _amount_micro_usd(data: dict[str, Any]) -> int:
    if ("amount_usd" in data) == ("amount_micro_usd" in data):
        raise ApiError(
            400,
            'give the amount as amount_usd (a decimal string, e.g. "12.50") or amount_micro_usd'
            " (an integer), one of them",
            code="missing_required_parameter",
            param="amount_usd",
        )
    if "amount_usd" in data:
        text = data["amount_usd"]
        if not isinstance(text, str):
            raise ApiError(
                400,
                'amount_usd is a decimal string such as "12.50"',
                code="invalid_value",
                param="amount_usd",
            )
        try:
            return parse_usd(text)
        except InvalidUsdAmount as error:
            raise ApiError(400, str(error), code="invalid_value", param="amount_usd") from None
    value = data["amount_micro_usd"]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(
            400, "amount_micro_usd is an integer", code="invalid_value", param="amount_micro_usd"
        )
    return value


@post("/v1/admin/accounts/{account_id:str}/credits", status_code=200)
async def add_credits_endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Operator: top up an account's wallet, once per ``transfer_id`` (made up when absent)."""
    await _operator_caller(request)
    data = await read_json_object(
        request, frozenset({"amount_usd", "amount_micro_usd", "transfer_id"})
    )
    micro_usd = _amount_micro_usd(data)
    transfer_id = data.get("transfer_id", new_top_up_id())
    if not isinstance(transfer_id, str):
        raise ApiError(400, "transfer_id is a string", code="invalid_value", param="transfer_id")
    try:
        done = await top_up(
            services_of(request),
            str(request.path_params["account_id"]),
            micro_usd,
            transfer_id=transfer_id,
        )
    except (AccountsError, LedgerError) as error:
        raise _api_error(error) from None
    return {
        "object": "credit.top_up",
        "account_id": done.account_id,
        "amount_micro_usd": done.amount_micro_usd,
        "transfer_id": done.transfer_id,
        "applied": done.applied,
        # The ledger wallet's available balance; GET /v1/account adds what the coordinator has
        # leased from it for requests and not used.
        "wallet_available_micro_usd": done.available_micro_usd,
    }


OPERATOR_HANDLERS = [suspend_node_endpoint, restore_node_endpoint, add_credits_endpoint]

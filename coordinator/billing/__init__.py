"""Billing on the request path: hold before dispatch, meter and charge after, post in batches.

:class:`Billing` is what the API layer calls:

1. :meth:`Billing.open` — before any node is used: the worst-case cost of the request (its prompt
   token ceiling plus ``max_tokens``, at the *dearest* candidate's prices, since failover or a
   hedge may move it; plus the Builder's surcharge and the platform fee) is reserved through the
   :class:`~coordinator.billing.gate.CreditGate`; not affordable -> :class:`InsufficientCredits`
   (402).
2. :meth:`Ticket.finish` — after the answer (complete, cut mid-stream by the node or by the
   customer leaving): the tokens are metered by :func:`coordinator.metering.meter` (the
   coordinator's own count when the operator configured a tokenizer, else the node's claim bounded
   by the delivered text), the charge is worked out at the serving node's prices and split
   (:func:`coordinator.ledger.charge_for`), and settled against the reservation; a token-count
   mismatch is recorded against the node's reputation. Nothing delivered: released, no charge.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from coordinator.billing.account import AccountMoney, account_money, recent_generations
from coordinator.billing.gate import (
    CreditGate,
    GateTotals,
    GenerationRecord,
    InsufficientCredits,
    Reservation,
    cost_json,
    generation_json,
)
from coordinator.ledger import Pricing, charge_for, credits_for, hold_amount_for
from coordinator.metering import (
    TokenizerMap,
    TokenizerSource,
    meter,
    prompt_token_ceiling,
    tool_calls_text,
)
from coordinator.routing import Router, TaskRouteChoice
from protocol import Done, Job, ToolCallDelta
from scheduler import RouteDecision

__all__ = [
    "AccountMoney",
    "Answer",
    "AppTerms",
    "Billing",
    "BillingSettings",
    "CreditGate",
    "GateTotals",
    "GenerationRecord",
    "InsufficientCredits",
    "Ticket",
    "account_money",
    "cost_json",
    "generation_json",
    "recent_generations",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BillingSettings:
    platform_fee_bps: int = 500
    tokenizers: TokenizerSource = field(default_factory=TokenizerMap)


@dataclass(frozen=True, slots=True)
class AppTerms:
    """The Builder app a request came through, and the surcharge version it is billed at."""

    app_id: str
    builder_account_id: str
    surcharge_bps: int
    surcharge_version: int


@dataclass
class Answer:
    """What the customer got: the serving node's output, as the coordinator received it."""

    node_id: str | None
    text: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    done: Done | None = None
    streamed_tokens: int = 0
    attempts: int = 0
    hedged: bool = False
    outcome: str = "completed"
    """``completed``, ``cut`` (the node failed mid-answer) or ``disconnected`` (the customer)."""


@dataclass
class Ticket:
    """One request's money: its reservation until :meth:`finish`."""

    billing: Billing
    reservation: Reservation
    job: Job
    generation_id: str
    request_id: str
    customer_account_id: str
    api_key_id: str | None
    app: AppTerms | None
    decision: RouteDecision
    requested_model: str | None = None
    """What the request named (an alias, ``route:NAME``) when it differs from the model."""
    task_route: TaskRouteChoice | None = None
    started_s: float = field(default_factory=time.monotonic)
    first_output_s: float | None = None
    record: GenerationRecord | None = None
    finished: bool = False

    def first_output(self) -> None:
        if self.first_output_s is None:
            self.first_output_s = time.monotonic()

    def finish(self, answer: Answer) -> GenerationRecord | None:
        """Charge what was delivered (once); None when nothing is billed."""
        if self.finished:
            return self.record
        self.finished = True
        try:
            self.record = self.billing.charge(self, answer)
        except Exception:
            self.billing.gate.release(self.reservation)
            raise
        return self.record

    def release(self) -> None:
        """Nothing was delivered (failed before output): no charge."""
        if not self.finished:
            self.finished = True
            self.billing.gate.release(self.reservation)


class Billing:
    def __init__(self, gate: CreditGate, router: Router, settings: BillingSettings) -> None:
        self.gate = gate
        self.router = router
        self.settings = settings

    def pricing(self, price_in: int, price_out: int, app: AppTerms | None) -> Pricing:
        return Pricing(
            price_in,
            price_out,
            surcharge_bps=app.surcharge_bps if app is not None else 0,
            platform_fee_bps=self.settings.platform_fee_bps,
        )

    def worst_case(self, job: Job, decision: RouteDecision, app: AppTerms | None) -> int:
        """What to reserve: the dearest candidate's charge for the prompt ceiling + max_tokens."""
        worst = 0
        for candidate in decision.candidates:
            state = candidate.state
            tokenizer = self.settings.tokenizers.tokenizer_for(state.model)
            prompt = prompt_token_ceiling(job, tokenizer=tokenizer)
            pricing = self.pricing(
                state.price_input_micro_usd_per_1m, state.price_output_micro_usd_per_1m, app
            )
            worst = max(worst, hold_amount_for(pricing, prompt, job.sampling.max_tokens))
        return worst

    async def open(
        self,
        job: Job,
        decision: RouteDecision,
        *,
        generation_id: str,
        request_id: str,
        customer_account_id: str,
        api_key_id: str | None,
        app: AppTerms | None,
        requested_model: str | None = None,
        task_route: TaskRouteChoice | None = None,
    ) -> Ticket:
        """Reserve the worst case; raises :class:`InsufficientCredits`."""
        amount = self.worst_case(job, decision, app)
        reservation = await self.gate.reserve(customer_account_id, amount)
        return Ticket(
            self,
            reservation,
            job,
            generation_id,
            request_id,
            customer_account_id,
            api_key_id,
            app,
            decision,
            requested_model=requested_model,
            task_route=task_route,
        )

    def charge(self, ticket: Ticket, answer: Answer) -> GenerationRecord | None:
        node_id, done = answer.node_id, answer.done
        node = self.router.registry.get(node_id) if node_id is not None else None
        candidate = next(
            (c for c in ticket.decision.candidates if c.state.node_id == node_id), None
        )
        if node_id is None or candidate is None:
            self.gate.release(ticket.reservation)
            return None
        state = candidate.state
        model = state.model
        finished = done is not None and done.finish_reason != "cancelled"
        metered = meter(
            ticket.job.model_copy(update={"model": model}),
            answer.text,
            tool_calls_text(answer.tool_calls),
            done.usage if done is not None else None,
            tokenizer=self.settings.tokenizers.tokenizer_for(model),
            finished=finished,
            streamed_tokens=answer.streamed_tokens,
        )
        if metered.mismatch:
            logger.warning(
                "token-count mismatch from node %s: %s", node_id, metered.mismatch_detail
            )
            self.router.record_outcome(node_id, "token_mismatch")
        if not metered.chargeable:
            self.gate.release(ticket.reservation)
            return None
        provider_account = node.provider_account_id if node is not None else state.owner_account_id
        pricing = self.pricing(
            state.price_input_micro_usd_per_1m, state.price_output_micro_usd_per_1m, ticket.app
        )
        charge = charge_for(pricing, metered.prompt_tokens, metered.completion_tokens)
        app, route = ticket.app, ticket.task_route
        now_s = time.monotonic()
        record = GenerationRecord(
            id=ticket.generation_id,
            request_id=ticket.request_id,
            customer_account_id=ticket.customer_account_id,
            api_key_id=ticket.api_key_id,
            app_id=app.app_id if app is not None else None,
            surcharge_version=app.surcharge_version if app is not None else None,
            builder_account_id=app.builder_account_id if app is not None else None,
            node_id=node_id,
            provider_account_id=provider_account,
            model=model,
            created_at_ms=int(time.time() * 1000),
            ttft_ms=(
                int((ticket.first_output_s - ticket.started_s) * 1000)
                if ticket.first_output_s is not None
                else None
            ),
            total_ms=int((now_s - ticket.started_s) * 1000),
            outcome=answer.outcome,
            finish_reason=done.finish_reason if done is not None else None,
            attempts=answer.attempts,
            hedged=answer.hedged,
            prompt_tokens=metered.prompt_tokens,
            completion_tokens=metered.completion_tokens,
            node_prompt_tokens=done.usage.prompt_tokens if done is not None else None,
            node_completion_tokens=(
                done.usage.completion_tokens if done is not None else answer.streamed_tokens
            ),
            metering=metered.source,
            token_mismatch=metered.mismatch,
            price_input_micro_usd_per_1m=state.price_input_micro_usd_per_1m,
            price_output_micro_usd_per_1m=state.price_output_micro_usd_per_1m,
            charge=charge,
            credits=credits_for(
                charge,
                provider_account_id=provider_account,
                builder_account_id=app.builder_account_id if app is not None else None,
            ),
            receipt_signature=done.receipt_signature if done is not None else None,
            requested_model=(ticket.requested_model if ticket.requested_model != model else None),
            route=route.name if route is not None else None,
            route_version=route.version if route is not None else None,
            route_rule=route.rule if route is not None else None,
        )
        self.gate.settle(ticket.reservation, record)
        return record

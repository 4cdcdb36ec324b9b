"""Statements: per Provider and per Builder, what their traffic earned in a period.

Built from the ``generations`` rows (posted requests) of a calendar month (UTC), or any
``[since_ms, until_ms)`` window for an on-demand statement. For a **Provider**: requests their
nodes served, tokens, ``gross`` (what customers paid for those requests), ``fees`` (the platform
fee and any Builder surcharge on them, which are not the Provider's) and ``net`` (their
earnings: the provider parts). For a **Builder**: requests through their apps, tokens, ``gross``,
``fees`` (provider price and platform fee) and ``net`` (the surcharges). ``gross = fees + net``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.generations import Generation

__all__ = ["StatementLine", "statement", "to_csv"]

Payee = Literal["provider", "builder"]


@dataclass(frozen=True, slots=True)
class StatementLine:
    payee_kind: Payee
    account_id: str
    since_ms: int
    until_ms: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    gross_micro_usd: int
    fees_micro_usd: int
    net_micro_usd: int


async def statement(
    session: AsyncSession,
    kind: Payee,
    since_ms: int,
    until_ms: int,
    *,
    account_id: str | None = None,
) -> list[StatementLine]:
    """One line per payee of ``kind`` with traffic in ``[since_ms, until_ms)``, by account id."""
    payee = Generation.provider_account_id if kind == "provider" else Generation.builder_account_id
    earned = Generation.provider_micro_usd if kind == "provider" else Generation.builder_micro_usd
    gross = (
        Generation.provider_micro_usd + Generation.builder_micro_usd + Generation.platform_micro_usd
    )
    query = (
        select(
            payee,
            func.count(),
            func.sum(Generation.prompt_tokens),
            func.sum(Generation.completion_tokens),
            func.sum(gross),
            func.sum(earned),
        )
        .where(
            payee.is_not(None),
            Generation.created_at_ms >= since_ms,
            Generation.created_at_ms < until_ms,
        )
        .group_by(payee)
        .order_by(payee)
    )
    if account_id is not None:
        query = query.where(payee == account_id)
    lines = []
    for account, requests, prompt, completion, gross_sum, net in await session.execute(query):
        gross_total, net_total = int(gross_sum or 0), int(net or 0)
        lines.append(
            StatementLine(
                kind,
                str(account),
                since_ms,
                until_ms,
                int(requests),
                int(prompt or 0),
                int(completion or 0),
                gross_total,
                gross_total - net_total,
                net_total,
            )
        )
    return lines


def to_csv(lines: list[StatementLine]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(StatementLine.__dataclass_fields__))
    writer.writeheader()
    for line in lines:
        writer.writerow(asdict(line))
    return out.getvalue()

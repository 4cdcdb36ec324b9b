"""Small builders for scheduler tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from scheduler import NodeModelState

MODEL = "llama-3-8b"


def node(node_id: str = "n1", **changes: Any) -> NodeModelState:
    base = NodeModelState(
        node_id=node_id,
        owner_account_id=f"owner-{node_id}",
        model=MODEL,
        provider=f"prov-{node_id}",
        price_input_micro_usd_per_1m=100_000,
        price_output_micro_usd_per_1m=200_000,
        max_concurrency=4,
        in_flight=0,
        context_length=8192,
        supported_parameters=frozenset({"tools", "response_format"}),
        ttft_p50_ms=200.0,
        ttft_p90_ms=400.0,
        tokens_per_s_p50=50.0,
        error_rate=0.0,
        timeout_rate=0.0,
        reputation=0.8,
    )
    return replace(base, **changes)

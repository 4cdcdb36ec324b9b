"""Immutable inputs of a routing decision: the state of each node for each model it serves.

A :class:`NetworkSnapshot` is built once (by whoever owns the live view of the network) and reused
by many decisions. It is indexed by model, so a decision costs O(candidates for that model), and
it precomputes, per model, the *leaders* on each request-independent key (cheapest input price,
cheapest output price, fastest time to first token, highest throughput, best reputation) so that a
decision over a very large pool can examine a bounded sample plus the leaders (see
:func:`scheduler.policy.route`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CircuitState", "NetworkSnapshot", "NodeModelState"]

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class NodeModelState:
    """What the scheduler knows about one node serving one model, at snapshot time.

    Prices are integer micro-USD per 1M tokens. Measurements of ``0`` mean *unknown*: the policy
    substitutes its priors (:class:`scheduler.policy.PolicyConfig`). Rates and reputation are in
    ``[0, 1]``.
    """

    node_id: str
    owner_account_id: str
    model: str
    provider: str
    """Public provider handle, matched by ``order`` / ``only`` / ``ignore`` (as is ``node_id``)."""
    price_input_micro_usd_per_1m: int
    price_output_micro_usd_per_1m: int
    max_concurrency: int
    in_flight: int
    context_length: int
    supported_parameters: frozenset[str] = frozenset()
    ttft_p50_ms: float = 0.0
    ttft_p90_ms: float = 0.0
    tokens_per_s_p50: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    reputation: float = 0.5
    circuit: CircuitState = "closed"
    probation: bool = False


def _leaders(states: tuple[NodeModelState, ...], count: int) -> tuple[NodeModelState, ...]:
    keys: tuple[Callable[[NodeModelState], float], ...] = (
        lambda s: s.price_input_micro_usd_per_1m,
        lambda s: s.price_output_micro_usd_per_1m,
        lambda s: s.ttft_p50_ms if s.ttft_p50_ms > 0 else float("inf"),
        lambda s: -s.tokens_per_s_p50,
        lambda s: -s.reputation,
    )
    chosen: dict[str, NodeModelState] = {}
    for key in keys:
        for state in sorted(states, key=key)[:count]:
            chosen.setdefault(state.node_id, state)
    return tuple(chosen.values())


@dataclass(frozen=True, slots=True)
class _ModelIndex:
    states: tuple[NodeModelState, ...]
    by_node: dict[str, NodeModelState]
    by_provider: dict[str, tuple[NodeModelState, ...]]
    leaders: tuple[NodeModelState, ...]


@dataclass(frozen=True)
class NetworkSnapshot:
    """An immutable, model-indexed view of the network; build it with :meth:`build`."""

    _index: dict[str, _ModelIndex] = field(default_factory=dict)

    @classmethod
    def build(
        cls, states: Iterable[NodeModelState], *, leaders_per_key: int = 4
    ) -> NetworkSnapshot:
        """Index ``states`` by model (O(n log n) once); later lookups are O(1)."""
        grouped: dict[str, list[NodeModelState]] = {}
        for state in states:
            grouped.setdefault(state.model, []).append(state)
        index: dict[str, _ModelIndex] = {}
        for model, group in grouped.items():
            frozen = tuple(group)
            providers: dict[str, list[NodeModelState]] = {}
            for state in frozen:
                providers.setdefault(state.provider, []).append(state)
            index[model] = _ModelIndex(
                states=frozen,
                by_node={s.node_id: s for s in frozen},
                by_provider={p: tuple(v) for p, v in providers.items()},
                leaders=_leaders(frozen, leaders_per_key),
            )
        return cls(index)

    def models(self) -> tuple[str, ...]:
        return tuple(sorted(self._index))

    def candidates(self, model: str) -> tuple[NodeModelState, ...]:
        """Every node serving ``model`` (eligible or not); empty when nobody serves it."""
        entry = self._index.get(model)
        return entry.states if entry is not None else ()

    def find(self, model: str, node_or_provider: str) -> tuple[NodeModelState, ...]:
        """The states for ``model`` whose node id or provider handle is ``node_or_provider``."""
        entry = self._index.get(model)
        if entry is None:
            return ()
        node = entry.by_node.get(node_or_provider)
        by_provider = entry.by_provider.get(node_or_provider, ())
        if node is None:
            return by_provider
        return (node, *(s for s in by_provider if s is not node))

    def leaders(self, model: str) -> tuple[NodeModelState, ...]:
        entry = self._index.get(model)
        return entry.leaders if entry is not None else ()

"""Immutable inputs of a routing decision: the state of each node for each model it serves.

A :class:`NetworkSnapshot` is built once (by whoever owns the live view of the network) and reused
by many decisions. It is indexed by model, so a decision costs O(candidates for that model), and
it precomputes, per model, the *leaders* on each request-independent key (cheapest input price,
cheapest output price, fastest time to first token, highest throughput, best reputation) so that a
decision over a very large pool can examine a bounded sample plus the leaders (see
:func:`scheduler.policy.route`).
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "CircuitState",
    "LiveOverlay",
    "NetworkSnapshot",
    "NodeModelState",
    "SnapshotBuilder",
]

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
    suspended: bool = False
    """The operator keeps the node from new jobs (jobs already running finish)."""


class LiveOverlay(Protocol):
    """Brings the volatile fields of a state up to date at decision time.

    Fields that change with every request (``in_flight``) or with the clock (``circuit``) may be
    overlaid from the live network for the states a decision examines, so a decision never sees
    them stale even when the snapshot is not rebuilt for each of their changes.
    """

    def current(self, state: NodeModelState) -> NodeModelState:
        """``state`` with its volatile fields as they are now (the same object if unchanged)."""
        ...


_LeaderKey = Callable[[NodeModelState], float]
_LEADER_KEYS: tuple[_LeaderKey, ...] = (
    lambda s: s.price_input_micro_usd_per_1m,
    lambda s: s.price_output_micro_usd_per_1m,
    lambda s: s.ttft_p50_ms if s.ttft_p50_ms > 0 else float("inf"),
    lambda s: -s.tokens_per_s_p50,
    lambda s: -s.reputation,
)
"""The request-independent keys a model's leaders are best on (lower is better)."""


@dataclass(frozen=True, slots=True)
class _ModelIndex:
    states: tuple[NodeModelState, ...]
    by_node: dict[str, int]
    """Node id -> position in ``states``."""
    by_provider: dict[str, tuple[int, ...]]
    leaders: tuple[NodeModelState, ...]


@dataclass(frozen=True)
class NetworkSnapshot:
    """An immutable, model-indexed view of the network.

    Build one with :meth:`build` from a list of states, or keep one up to date incrementally with
    a :class:`SnapshotBuilder` (what the coordinator does).
    """

    _index: dict[str, _ModelIndex] = field(default_factory=dict)

    @classmethod
    def build(
        cls, states: Iterable[NodeModelState], *, leaders_per_key: int = 4
    ) -> NetworkSnapshot:
        """Index ``states`` by model; later lookups are O(1)."""
        builder = SnapshotBuilder(leaders_per_key=leaders_per_key)
        for state in states:
            builder.upsert(state)
        return builder.build()

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
        states = entry.states
        position = entry.by_node.get(node_or_provider)
        by_provider = tuple(states[i] for i in entry.by_provider.get(node_or_provider, ()))
        if position is None:
            return by_provider
        node = states[position]
        return (node, *(s for s in by_provider if s is not node))

    def leaders(self, model: str) -> tuple[NodeModelState, ...]:
        entry = self._index.get(model)
        return entry.leaders if entry is not None else ()


class _LiveModel:
    """The mutable side of one model's index, frozen into a :class:`_ModelIndex` on demand.

    Leaders are kept per key as a short sorted list of ``(key value, node id)``: a changed state
    enters when it beats the list's worst, a leader whose value changed is re-sorted in place,
    and a list that lost a member (its node left) is recomputed in full at the next freeze. So
    the leaders are exact after a full computation and otherwise converge as states are
    refreshed: they are hints for the large-pool sample, never a filter.
    """

    __slots__ = (
        "_count",
        "_frozen",
        "_leaders",
        "_membership_changed",
        "_recompute",
        "positions",
        "states",
    )

    def __init__(self, leaders_per_key: int) -> None:
        self._count = leaders_per_key
        self.states: list[NodeModelState] = []
        self.positions: dict[str, int] = {}
        self._leaders: list[list[tuple[float, str]]] = [[] for _ in _LEADER_KEYS]
        self._recompute: set[int] = set()
        self._membership_changed = True
        self._frozen: _ModelIndex | None = None

    def upsert(self, state: NodeModelState) -> None:
        position = self.positions.get(state.node_id)
        if position is None:
            self.positions[state.node_id] = len(self.states)
            self.states.append(state)
            self._membership_changed = True
        else:
            self.states[position] = state
        for k, key in enumerate(_LEADER_KEYS):
            if k in self._recompute:
                continue
            board = self._leaders[k]
            value = key(state)
            for i, (_, node_id) in enumerate(board):
                if node_id == state.node_id:
                    board[i] = (value, node_id)
                    board.sort()
                    break
            else:
                if len(board) < self._count or value < board[-1][0]:
                    insort(board, (value, state.node_id))
                    del board[self._count :]

    def remove(self, node_id: str) -> None:
        position = self.positions.pop(node_id, None)
        if position is None:
            return
        last = self.states.pop()
        if position < len(self.states):
            self.states[position] = last
            self.positions[last.node_id] = position
        self._membership_changed = True
        for k, board in enumerate(self._leaders):
            if any(member == node_id for _, member in board):
                self._recompute.add(k)

    def freeze(self) -> _ModelIndex:
        states = tuple(self.states)
        frozen = self._frozen
        if frozen is None or self._membership_changed:
            by_node = dict(self.positions)
            providers: dict[str, list[int]] = {}
            for i, state in enumerate(states):
                providers.setdefault(state.provider, []).append(i)
            by_provider = {p: tuple(v) for p, v in providers.items()}
            self._membership_changed = False
        else:
            by_node, by_provider = frozen.by_node, frozen.by_provider
        for k in self._recompute:
            key = _LEADER_KEYS[k]
            self._leaders[k] = [
                (key(s), s.node_id) for s in heapq.nsmallest(self._count, states, key=key)
            ]
        self._recompute.clear()
        chosen: dict[str, NodeModelState] = {}
        for board in self._leaders:
            for _, node_id in board:
                chosen.setdefault(node_id, states[by_node[node_id]])
        self._frozen = _ModelIndex(states, by_node, by_provider, tuple(chosen.values()))
        return self._frozen


class SnapshotBuilder:
    """Keeps a :class:`NetworkSnapshot` up to date as node states change, at the cost of the
    changes: :meth:`build` re-freezes only the models that changed (a tuple copy of their
    states; the node and provider indexes too when nodes joined or left) and shares the rest
    with the previous snapshot, which stays valid and unchanged.
    """

    def __init__(self, *, leaders_per_key: int = 4) -> None:
        self._leaders_per_key = leaders_per_key
        self._models: dict[str, _LiveModel] = {}
        self._changed: set[str] = set()
        self._snapshot = NetworkSnapshot()

    def __len__(self) -> int:
        return sum(len(m.states) for m in self._models.values())

    def get(self, node_id: str, model: str) -> NodeModelState | None:
        live = self._models.get(model)
        if live is None:
            return None
        position = live.positions.get(node_id)
        return live.states[position] if position is not None else None

    def upsert(self, state: NodeModelState) -> None:
        """Add ``state``, or replace the state of the same node and model."""
        live = self._models.get(state.model)
        if live is None:
            live = self._models[state.model] = _LiveModel(self._leaders_per_key)
        live.upsert(state)
        self._changed.add(state.model)

    def remove(self, node_id: str, model: str) -> None:
        live = self._models.get(model)
        if live is not None and node_id in live.positions:
            live.remove(node_id)
            self._changed.add(model)

    def build(self) -> NetworkSnapshot:
        """The snapshot as of now (the previous one again when nothing changed)."""
        if not self._changed:
            return self._snapshot
        index = dict(self._snapshot._index)
        for model in self._changed:
            live = self._models.get(model)
            if live is None or not live.states:
                index.pop(model, None)
                self._models.pop(model, None)
            else:
                index[model] = live.freeze()
        self._changed.clear()
        self._snapshot = NetworkSnapshot(index)
        return self._snapshot

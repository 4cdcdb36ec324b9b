"""SnapshotBuilder: an incrementally kept snapshot always agrees with one built from scratch."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import NetworkSnapshot, NodeModelState, SnapshotBuilder

from .factories import MODEL, node

OTHER = "other-model"
NODE_IDS = [f"n{i}" for i in range(12)]


def state(node_id: str, model: str, price: int, tps: float) -> NodeModelState:
    return replace(
        node(node_id),
        model=model,
        provider=f"p{int(node_id[1:]) % 3}",
        price_input_micro_usd_per_1m=price,
        tokens_per_s_p50=tps,
    )


operation = st.one_of(
    st.tuples(
        st.just("upsert"),
        st.sampled_from(NODE_IDS),
        st.sampled_from([MODEL, OTHER]),
        st.integers(1, 1000),
        st.floats(1, 500),
    ),
    st.tuples(st.just("remove"), st.sampled_from(NODE_IDS), st.sampled_from([MODEL, OTHER])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60), st.integers(0, 5))
def test_incremental_snapshots_match_fresh_builds(
    operations: list[tuple[object, ...]], build_every: int
) -> None:
    builder = SnapshotBuilder(leaders_per_key=2)
    truth: dict[tuple[str, str], NodeModelState] = {}
    for step, op in enumerate(operations):
        if op[0] == "upsert":
            _, node_id, model, price, tps = op
            s = state(str(node_id), str(model), int(str(price)), float(str(tps)))
            builder.upsert(s)
            truth[(s.node_id, s.model)] = s
        else:
            _, node_id, model = op
            builder.remove(str(node_id), str(model))
            truth.pop((str(node_id), str(model)), None)
        if build_every and step % build_every:
            continue
        check(builder.build(), truth)
    check(builder.build(), truth)


def check(snapshot: NetworkSnapshot, truth: dict[tuple[str, str], NodeModelState]) -> None:
    fresh = NetworkSnapshot.build(truth.values(), leaders_per_key=2)
    assert snapshot.models() == fresh.models()
    for model in fresh.models():
        live = snapshot.candidates(model)
        assert sorted(live, key=lambda s: s.node_id) == sorted(
            fresh.candidates(model), key=lambda s: s.node_id
        )
        for node_id in [*NODE_IDS, "p0", "p1", "p2"]:
            assert set(snapshot.find(model, node_id)) == set(fresh.find(model, node_id))
        leaders = snapshot.leaders(model)
        assert all(s in live for s in leaders)  # current states, never stale copies
        assert len({s.node_id for s in leaders}) == len(leaders)


def test_the_previous_snapshot_is_left_unchanged() -> None:
    builder = SnapshotBuilder()
    builder.upsert(state("n1", MODEL, 10, 50.0))
    first = builder.build()
    builder.upsert(state("n1", MODEL, 99, 50.0))
    builder.upsert(state("n2", MODEL, 20, 50.0))
    builder.remove("n1", MODEL)
    second = builder.build()
    assert [s.price_input_micro_usd_per_1m for s in first.candidates(MODEL)] == [10]
    assert [s.node_id for s in second.candidates(MODEL)] == ["n2"]
    assert builder.build() is second  # nothing changed since


def test_unchanged_models_are_shared_between_snapshots() -> None:
    builder = SnapshotBuilder()
    builder.upsert(state("n1", MODEL, 10, 50.0))
    builder.upsert(state("n2", OTHER, 10, 50.0))
    first = builder.build()
    builder.upsert(state("n3", MODEL, 10, 50.0))
    second = builder.build()
    assert second.candidates(OTHER) is first.candidates(OTHER)


def test_leaders_are_exact_when_states_only_arrive() -> None:
    builder = SnapshotBuilder(leaders_per_key=3)
    states = [state(f"n{i}", MODEL, 1000 - i * 7 % 991, float(i % 17)) for i in range(200)]
    for s in states:
        builder.upsert(s)
    leaders = {s.node_id for s in builder.build().leaders(MODEL)}
    cheapest = sorted(states, key=lambda s: s.price_input_micro_usd_per_1m)[:3]
    fastest = sorted(states, key=lambda s: -s.tokens_per_s_p50)[:3]
    assert {s.node_id for s in cheapest} <= leaders
    assert {s.tokens_per_s_p50 for s in fastest} <= {
        s.tokens_per_s_p50 for s in builder.build().leaders(MODEL)
    }


def test_a_leader_that_leaves_is_replaced_by_the_next_best() -> None:
    builder = SnapshotBuilder(leaders_per_key=1)
    for i, price in enumerate([5, 1, 9]):
        builder.upsert(state(f"n{i}", MODEL, price, 10.0))
    assert "n1" in {s.node_id for s in builder.build().leaders(MODEL)}
    builder.remove("n1", MODEL)
    leaders = {s.node_id for s in builder.build().leaders(MODEL)}
    assert "n1" not in leaders
    assert "n0" in leaders  # the new cheapest

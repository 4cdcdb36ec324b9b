"""coordinator.routing: the snapshot built from the registry, the books, affinity, endpoints."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest

from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.routing import RouteLog, Router, RouteRecord, provider_handle
from scheduler import ProviderPreferences, RouteRequest, RoutingPreferences
from tests.protocol.peers import sample_hardware, sample_offer

MODEL = sample_offer().model


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live(node_id: str, owner: str = "acct_p", price: int = 100, slots: int = 4) -> LiveNode:
    offer = sample_offer().model_copy(
        update={
            "price_input_micro_usd_per_1m": price,
            "price_output_micro_usd_per_1m": price,
            "max_concurrency": slots,
        }
    )
    return LiveNode(
        node_id=node_id,
        provider_account_id=owner,
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={MODEL: offer},
        link=cast(NodeLink, object()),
    )


def router(*nodes: LiveNode) -> tuple[Router, Clock]:
    registry = NodeRegistry()
    for node in nodes:
        registry.add(node)
    clock = Clock()
    return Router(registry, clock=clock, rng=random.Random(7), affinity_limit=2), clock


def request(customer: str | None = "acct_c") -> RouteRequest:
    return RouteRequest(prompt_tokens=10, max_tokens=10, customer_account_id=customer)


def test_snapshot_carries_offers_load_owner_and_books() -> None:
    node = live("nd_a", owner="acct_p", price=250, slots=4)
    node.in_flight[MODEL] = 3
    r, _ = router(node)
    r.record_success("nd_a", MODEL, ttft_ms=120.0, tokens_per_s=80.0)
    (state,) = r.snapshot().candidates(MODEL)
    assert state.owner_account_id == "acct_p"
    assert state.provider == provider_handle("acct_p")
    assert state.provider.startswith("pv_")
    assert state.price_input_micro_usd_per_1m == 250
    assert (state.in_flight, state.max_concurrency) == (3, 4)
    assert state.ttft_p50_ms == 120.0
    assert state.tokens_per_s_p50 == 80.0
    assert state.reputation > 0.5
    assert state.circuit == "closed"
    assert state.supported_parameters == frozenset(sample_offer().supported_parameters)


def test_failures_lower_reputation_raise_error_rate_and_open_the_circuit() -> None:
    r, clock = router(live("nd_a"))
    for _ in range(5):
        r.record_failure("nd_a", MODEL, "failure")
    (state,) = r.snapshot().candidates(MODEL)
    assert state.reputation < 0.5
    assert state.error_rate == 1.0
    assert state.circuit == "open"
    assert not r.may_try("nd_a", MODEL)
    clock.now += 11  # the base cool-down has passed: one probe goes through
    assert r.may_try("nd_a", MODEL)
    assert not r.may_try("nd_a", MODEL)
    r.record_success("nd_a", MODEL, ttft_ms=10.0, tokens_per_s=None)
    assert r.snapshot().candidates(MODEL)[0].circuit == "closed"


def test_timeouts_count_as_timeouts() -> None:
    r, _ = router(live("nd_a"))
    r.record_failure("nd_a", MODEL, "timeout")
    (state,) = r.snapshot().candidates(MODEL)
    assert state.timeout_rate == 1.0
    assert state.error_rate == 0.0


def test_a_customer_is_never_routed_to_their_own_node() -> None:
    r, _ = router(live("nd_own", owner="acct_c", price=1), live("nd_other", price=1000))
    for _ in range(20):
        decision = r.decide(RoutingPreferences(MODEL), request("acct_c"))
        assert [c.state.node_id for c in decision.candidates] == ["nd_other"]
    assert any(e.node_id == "nd_own" for e in decision.excluded)


def test_preferences_reach_the_policy() -> None:
    r, _ = router(live("nd_a"), live("nd_b"))
    only_b = RoutingPreferences(MODEL, provider=ProviderPreferences(only=frozenset({"nd_b"})))
    assert [c.state.node_id for c in r.decide(only_b, request()).candidates] == ["nd_b"]


def test_session_affinity_is_used_and_bounded() -> None:
    r, _ = router(live("nd_a"), live("nd_b"))
    r.remember_session("s1", "nd_b")
    decision = r.decide(RoutingPreferences(MODEL, session_id="s1"), request())
    assert decision.affinity_used
    assert decision.primary.state.node_id == "nd_b"
    r.remember_session("s2", "nd_a")
    r.remember_session("s3", "nd_a")
    assert list(r.affinity) == ["s2", "s3"]


def test_endpoints_list_each_node_without_secrets() -> None:
    r, _ = router(live("nd_a", price=5), live("nd_b", price=7))
    r.record_success("nd_a", MODEL, ttft_ms=50.0, tokens_per_s=100.0)
    rows: list[dict[str, Any]] = r.endpoints(MODEL)
    assert [row["node"] for row in rows] == ["nd_a", "nd_b"]
    assert rows[0]["pricing"]["input"] == 5
    assert rows[0]["latency_ms"] == {"p50": 50.0, "p90": 50.0}
    assert rows[1]["latency_ms"] == {"p50": None, "p90": None}
    assert rows[0]["circuit"] == "closed"
    assert "acct_p" not in str(rows)
    assert r.endpoints("other/model") == []


def test_the_snapshot_is_reused_until_something_changes() -> None:
    r, _ = router(live("nd_a"), live("nd_b"))
    first = r.snapshot()
    assert r.snapshot() is first  # nothing happened
    r.record_success("nd_a", MODEL, ttft_ms=80.0, tokens_per_s=40.0)
    computed = r.states_computed
    second = r.snapshot()
    assert second is not first
    assert r.states_computed == computed + 1  # only nd_a's state was recomputed
    assert {s.node_id: s.ttft_p50_ms for s in second.candidates(MODEL)} == {
        "nd_a": 80.0,
        "nd_b": 0.0,
    }
    assert second.find(MODEL, "nd_b")[0] is first.find(MODEL, "nd_b")[0]
    r.registry.add(live("nd_c"))
    assert len(r.snapshot().candidates(MODEL)) == 3


def test_states_are_refreshed_round_robin_as_time_passes() -> None:
    r, clock = router(*(live(f"nd_{i}") for i in range(10)))
    r.snapshot()
    computed = r.states_computed
    clock.now += r.state_refresh_s / 2  # half the refresh period: half the states are due
    r.snapshot()
    assert r.states_computed == computed + 5
    clock.now += r.state_refresh_s / 2
    r.snapshot()
    assert r.states_computed == computed + 10


def test_offers_and_departures_reach_the_snapshot() -> None:
    node_a, node_b = live("nd_a"), live("nd_b")
    r, _ = router(node_a, node_b)
    assert len(r.snapshot().candidates(MODEL)) == 2
    r.registry.set_offers(node_a, [])  # draining
    assert [s.node_id for s in r.snapshot().candidates(MODEL)] == ["nd_b"]
    r.registry.remove(node_b)
    assert r.snapshot().candidates(MODEL) == ()


def test_jobs_in_flight_are_seen_live_without_recomputing_states() -> None:
    node_a, node_b = live("nd_a", slots=1), live("nd_b", slots=1)
    r, _ = router(node_a, node_b)
    r.snapshot()
    computed = r.states_computed
    node_a.in_flight[MODEL] = 1  # nd_a filled up after its state was computed
    decision = r.decide(RoutingPreferences(MODEL), request())
    assert r.states_computed == computed
    assert [c.state.node_id for c in decision.candidates] == ["nd_b"]
    assert [(e.node_id, e.reason) for e in decision.excluded] == [
        ("nd_a", "no free slot (1/1 in flight)")
    ]


def test_an_opened_circuit_keeps_traffic_away_until_its_probe_succeeds() -> None:
    r, clock = router(live("nd_a"), live("nd_b"))
    for _ in range(5):
        r.record_failure("nd_a", MODEL, "failure")
    decision = r.decide(RoutingPreferences(MODEL), request())
    assert [c.state.node_id for c in decision.candidates] == ["nd_b"]
    assert r.tripped == {"nd_a": {MODEL}}
    clock.now += 11
    assert r.may_try("nd_a", MODEL)  # the probe
    r.record_success("nd_a", MODEL, ttft_ms=10.0, tokens_per_s=None)
    assert r.tripped == {}


def test_provider_handles_select_a_providers_whole_fleet() -> None:
    r, _ = router(live("nd_a", owner="acct_x"), live("nd_b", owner="acct_x"), live("nd_c"))
    only_x = RoutingPreferences(
        MODEL, provider=ProviderPreferences(only=frozenset({provider_handle("acct_x")}))
    )
    chosen = {c.state.node_id for c in r.decide(only_x, request()).candidates}
    assert chosen == {"nd_a", "nd_b"}
    assert provider_handle("acct_x") != provider_handle("acct_p")


def test_uptime_follows_the_registry_events() -> None:
    node = live("nd_a")
    node.heartbeat_interval_s = 10.0
    r, clock = router(node)
    for _ in range(10):
        clock.now += 10
        r.registry.heard(node)
    assert r.endpoints(MODEL)[0]["uptime"] == 1.0
    r.registry.remove(node)
    clock.now += 100
    report = r.node_report("nd_a")
    assert report is not None
    assert report["live"] is False
    assert report["uptime"] == pytest.approx(100 / 200, abs=0.01)


def test_the_node_report_shows_the_reputation_inputs() -> None:
    r, _ = router(live("nd_a"))
    r.record_success("nd_a", MODEL, ttft_ms=10.0, tokens_per_s=5.0)
    r.record_failure("nd_a", MODEL, "node_cancel")
    r.record_outcome("nd_a", "token_mismatch")
    report = r.node_report("nd_a")
    assert report is not None
    inputs = report["reputation"]["inputs"]
    assert inputs["completion"] == pytest.approx(1.0)
    assert inputs["node_cancel"] == pytest.approx(1.0)
    assert inputs["token_mismatch"] == pytest.approx(1.0)
    assert inputs["bad_weighted"] == pytest.approx(4.0)  # 1 + 3 for the mismatch
    assert report["models"][MODEL]["circuit"] == "closed"
    assert r.node_report("nd_unknown") is None


def test_books_of_nodes_gone_for_long_are_forgotten() -> None:
    gone, staying = live("nd_gone"), live("nd_stay")
    r, clock = router(gone, staying)
    r.record_success("nd_gone", MODEL, ttft_ms=10.0, tokens_per_s=5.0)
    r.registry.remove(gone)
    clock.now += r.forget_after_s + 120
    r.snapshot()
    assert r.node_report("nd_gone") is None
    assert r.node_report("nd_stay") is not None


def test_the_route_log_keeps_the_most_recent_records() -> None:
    r, _ = router(live("nd_a"))
    log = RouteLog(limit=2)
    decision = r.decide(RoutingPreferences(MODEL), request())
    for request_id in ("req_1", "req_2", "req_3"):
        log.add(RouteRecord(request_id, "acct_c", MODEL, decision, hedging=False))
    assert log.get("req_1") is None
    assert [rec.request_id for rec in log.recent(5)] == ["req_3", "req_2"]
    explained = log.recent(1)[0].to_json()
    assert explained["decision"]["candidates"][0]["node"] == "nd_a"
    assert "acct_p" not in str(explained["decision"])


def test_a_suspended_node_is_excluded_until_restored_and_its_running_jobs_are_untouched() -> None:
    node = live("nd_a")
    node.in_flight[MODEL] = 2  # jobs already running on it
    r, _ = router(node)
    prefs = RoutingPreferences(MODEL)
    assert [c.state.node_id for c in r.decide(prefs, request()).candidates] == ["nd_a"]

    assert r.registry.set_suspended("nd_a", True)
    decision = r.decide(prefs, request())
    assert decision.candidates == ()
    assert [(e.node_id, e.reason) for e in decision.excluded] == [
        ("nd_a", "suspended by the operator")
    ]
    assert node.in_flight[MODEL] == 2  # suspension starts nothing and stops nothing
    report = r.node_report("nd_a")
    assert report is not None
    assert report["suspended"] is True

    assert r.registry.set_suspended("nd_a", False)
    assert [c.state.node_id for c in r.decide(prefs, request()).candidates] == ["nd_a"]
    assert not r.registry.set_suspended("nd_gone", True)  # not connected here: nothing to mark


def test_a_suspended_node_is_not_listed_as_serving_its_models() -> None:
    r, _ = router(live("nd_a"), live("nd_b"))
    assert [(s.model, s.nodes) for s in r.registry.summaries()] == [(MODEL, 2)]
    r.registry.set_suspended("nd_a", True)
    assert [(s.model, s.nodes) for s in r.registry.summaries()] == [(MODEL, 1)]
    assert [row["node"] for row in r.endpoints(MODEL)] == ["nd_b"]
    r.registry.set_suspended("nd_b", True)
    assert r.registry.summaries() == []
    assert r.endpoints(MODEL) == []

"""Task routes: the document format, its validation, rule coverage and matching."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import (
    ROUTE_PREFIX,
    Conditions,
    InvalidTaskRoute,
    ProviderPreferences,
    RequestFeatures,
    RuleEvaluation,
    SchedulerError,
    TaskRoute,
    match_task_route,
    parse_conditions,
    parse_task_route,
    route_name,
)

EXAMPLE: dict[str, object] = {
    "name": "support-bot",
    "description": "cheap for triage, strong for tools",
    "rules": [
        {
            "name": "triage",
            "when": {"task": ["classification", "triage"], "max_prompt_tokens": 2000},
            "models": ["qwen/qwen-2.5-7b-instruct"],
            "provider": {"sort": "price"},
        },
        {
            "name": "tools",
            "when": {"tools": True},
            "models": ["meta-llama/llama-3.1-70b-instruct", "meta-llama/llama-3.1-8b-instruct"],
        },
    ],
    "default": {
        "models": ["meta-llama/llama-3.1-8b-instruct"],
        "provider": {"min_reputation": 0.5},
    },
}


def example() -> TaskRoute:
    return parse_task_route(copy.deepcopy(EXAMPLE))


def document_of(*rules: Mapping[str, object]) -> dict[str, object]:
    return {"name": "r", "rules": list(rules), "default": {"models": ["m"]}}


def with_rules(*whens: Mapping[str, object]) -> dict[str, object]:
    """A document whose rules are named r0, r1, ... with the given conditions and model m."""
    rules = [{"name": f"r{i}", "when": when, "models": ["m"]} for i, when in enumerate(whens)]
    return document_of(*rules)


# --- parsing and the canonical document ---


def test_the_example_parses() -> None:
    route = example()
    assert route.name == "support-bot"
    assert route.description == "cheap for triage, strong for tools"
    triage, tools = route.rules
    assert triage.name == "triage"
    assert triage.when == Conditions(task=("classification", "triage"), max_prompt_tokens=2000)
    assert triage.models == ("qwen/qwen-2.5-7b-instruct",)
    assert triage.provider == ProviderPreferences(sort="price")
    assert dict(triage.provider_json) == {"sort": "price"}
    assert tools.when == Conditions(tools=True)
    assert tools.provider == ProviderPreferences()
    assert dict(tools.provider_json) == {}
    assert route.default.name == "default"
    assert route.default.when == Conditions()
    assert route.default.provider.min_reputation == 0.5


def test_to_json_is_the_canonical_document_and_round_trips() -> None:
    route = example()
    document = route.to_json()
    assert json.loads(json.dumps(document)) == document
    assert document["default"] == {
        "name": "default",
        "models": ["meta-llama/llama-3.1-8b-instruct"],
        "provider": {"min_reputation": 0.5},
    }
    again = parse_task_route(document)
    assert again == route
    assert again.to_json() == document


def test_canonical_form_dedupes_lists_and_makes_task_a_list() -> None:
    route = parse_task_route(
        with_rules({"task": "triage", "tags": ["b", "a", "b"], "metadata": {"k": "v"}})
    )
    assert route.rules[0].when.to_json() == {
        "task": ["triage"],
        "tags": ["b", "a"],
        "metadata": {"k": "v"},
    }
    assert parse_task_route(route.to_json()) == route


def test_nested_provider_object_is_frozen_and_shown_back_as_written() -> None:
    provider = {
        "order": ["alice", "bob"],
        "max_price": {"prompt": "0.1"},
        "data_collection": "deny",
    }
    document = with_rules({"stream": True})
    document["default"] = {"models": ["m"], "provider": provider}
    route = parse_task_route(document)
    assert route.default.provider.order == ("alice", "bob")
    assert route.default.to_json()["provider"] == provider
    provider["order"] = ["mallory"]  # the route keeps its own copy
    assert route.default.provider_json["order"] == ("alice", "bob")


def test_a_route_may_have_only_a_default() -> None:
    route = parse_task_route({"default": {"models": ["m"]}}, name="alias")
    assert route.rules == ()
    assert route.to_json() == {
        "name": "alias",
        "description": "",
        "rules": [],
        "default": {"name": "default", "models": ["m"]},
    }


def test_the_callers_name_wins_and_must_agree_with_the_document() -> None:
    assert parse_task_route(copy.deepcopy(EXAMPLE), name="support-bot").name == "support-bot"
    unnamed = {key: value for key, value in EXAMPLE.items() if key != "name"}
    assert parse_task_route(copy.deepcopy(unnamed), name="other").name == "other"
    with pytest.raises(InvalidTaskRoute) as mismatch:
        parse_task_route(copy.deepcopy(EXAMPLE), name="other")
    assert mismatch.value.field == "name"
    assert "does not match" in mismatch.value.problem
    with pytest.raises(InvalidTaskRoute) as bad:
        parse_task_route(copy.deepcopy(unnamed), name="Not A Name")
    assert bad.value.field == "name"
    with pytest.raises(InvalidTaskRoute) as missing:
        parse_task_route(copy.deepcopy(unnamed))
    assert (missing.value.field, missing.value.problem) == ("name", "required")


# --- validation: every error names its field ---


def rule(**fields: object) -> dict[str, object]:
    """A document with one rule: name r0, when {tools: true}, models [m], overridden by fields."""
    base: dict[str, object] = {"name": "r0", "when": {"tools": True}, "models": ["m"]}
    base.update(fields)
    return {"name": "r", "rules": [base], "default": {"models": ["m"]}}


def when(**conditions: object) -> dict[str, object]:
    return rule(when=conditions)


def default(value: object) -> dict[str, object]:
    return {"name": "r", "rules": [], "default": value}


BAD_DOCUMENTS: list[tuple[object, str, str]] = [
    ([], "document", "must be an object"),
    ({**rule(), "owner": "me"}, "owner", "unknown field"),
    ({**rule(), "name": "Support Bot"}, "name", "a-z, 0-9"),
    ({**rule(), "name": "x" * 65}, "name", "1 to 64"),
    ({**rule(), "description": "x" * 501}, "description", "at most 500"),
    ({**rule(), "description": 7}, "description", "string"),
    ({**rule(), "rules": {}}, "rules", "list"),
    (with_rules(*({"task": f"t{i}"} for i in range(33))), "rules", "at most 32"),
    ({**rule(), "rules": ["triage"]}, "rules[0]", "must be an object"),
    (rule(weight=2), "rules[0].weight", "unknown field"),
    (
        {
            "name": "r",
            "rules": [{"when": {"tools": True}, "models": ["m"]}],
            "default": {"models": ["m"]},
        },
        "rules[0].name",
        "required",
    ),
    (rule(name="Triage"), "rules[0].name", "a-z, 0-9"),
    (rule(name="-x"), "rules[0].name", "starting with a letter or digit"),
    (rule(name="default"), "rules[0].name", "reserved"),
    (rule(name=3), "rules[0].name", "a-z"),
    (
        {"name": "r", "rules": [{"name": "r0", "models": ["m"]}], "default": {"models": ["m"]}},
        "rules[0].when",
        "required",
    ),
    (rule(when={}), "rules[0].when", "must not be empty"),
    (rule(when=[]), "rules[0].when", "must be an object"),
    (when(priority=1), "rules[0].when.priority", "unknown field"),
    (when(min_prompt_tokens=0), "rules[0].when", "matches every request"),
    (when(task=[]), "rules[0].when.task", "1 to 16"),
    (when(task=7), "rules[0].when.task", "list"),
    (when(task=""), "rules[0].when.task", "1 to 64 characters"),
    (when(task=["a", ""]), "rules[0].when.task[1]", "1 to 64 characters"),
    (when(task=["x" * 65]), "rules[0].when.task[0]", "1 to 64 characters"),
    (when(tags=[f"t{i}" for i in range(17)]), "rules[0].when.tags", "1 to 16"),
    (when(tags="urgent"), "rules[0].when.tags", "list"),
    (when(tags=[]), "rules[0].when.tags", "1 to 16"),
    (when(any_tags=[1]), "rules[0].when.any_tags[0]", "string"),
    (when(metadata=["k"]), "rules[0].when.metadata", "object"),
    (when(metadata={}), "rules[0].when.metadata", "1 to 16"),
    (when(metadata={f"k{i}": "v" for i in range(17)}), "rules[0].when.metadata", "1 to 16"),
    (when(metadata={"k" * 65: "v"}), f"rules[0].when.metadata.{'k' * 65}", "1 to 64"),
    (when(metadata={"": "v"}), "rules[0].when.metadata.", "1 to 64"),
    (when(metadata={"k": "v" * 513}), "rules[0].when.metadata.k", "at most 512"),
    (when(metadata={"k": 1}), "rules[0].when.metadata.k", "string"),
    (when(tools="yes"), "rules[0].when.tools", "boolean"),
    (when(stream=1), "rules[0].when.stream", "boolean"),
    (when(structured_output=None), "rules[0].when.structured_output", "boolean"),
    (when(max_prompt_tokens=True), "rules[0].when.max_prompt_tokens", "integer"),
    (when(max_prompt_tokens=1.5), "rules[0].when.max_prompt_tokens", "integer"),
    (when(max_prompt_tokens=100.0), "rules[0].when.max_prompt_tokens", "integer"),
    (when(max_prompt_tokens="100"), "rules[0].when.max_prompt_tokens", "integer"),
    (when(min_output_tokens=-1), "rules[0].when.min_output_tokens", "0 to 10000000"),
    (when(max_output_tokens=10_000_001), "rules[0].when.max_output_tokens", "0 to 10000000"),
    (
        when(min_prompt_tokens=500, max_prompt_tokens=100),
        "rules[0].when.min_prompt_tokens",
        "min_prompt_tokens 500 is over max_prompt_tokens 100: the rule can never match",
    ),
    (
        when(min_output_tokens=2, max_output_tokens=1),
        "rules[0].when.min_output_tokens",
        "min_output_tokens 2 is over max_output_tokens 1",
    ),
    (
        {
            "name": "r",
            "rules": [{"name": "r0", "when": {"tools": True}}],
            "default": {"models": ["m"]},
        },
        "rules[0].models",
        "required",
    ),
    (rule(models=[]), "rules[0].models", "1 to 8"),
    (rule(models="m"), "rules[0].models", "1 to 8"),
    (rule(models=[f"m{i}" for i in range(9)]), "rules[0].models", "1 to 8"),
    (rule(models=["a", "b", 3]), "rules[0].models[2]", "model name"),
    (rule(models=["a", ""]), "rules[0].models[1]", "model name"),
    (rule(models=["x" * 257]), "rules[0].models[0]", "1 to 256"),
    (rule(models=["a", "b", "a"]), "rules[0].models[2]", "listed twice"),
    (rule(provider="cheap"), "rules[0].provider", "must be an object"),
    (rule(provider=None), "rules[0].provider", "must be an object"),
    (rule(provider={"sort": "cost"}), "rules[0].provider.sort", "price, latency, throughput"),
    (rule(provider={"speed": 1}), "rules[0].provider.speed", "unknown field"),
    (rule(provider={"max_price": {"prompt": -1}}), "rules[0].provider.max_price.prompt", "between"),
    ({"name": "r", "rules": []}, "default", "required"),
    (default(["m"]), "default", "must be an object"),
    (default({"models": ["m"], "when": {"tools": True}}), "default.when", "no conditions"),
    (default({"name": "fallback", "models": ["m"]}), "default.name", "'default'"),
    (default({"provider": {}}), "default.models", "required"),
    (default({"models": [None]}), "default.models[0]", "model name"),
    (
        default({"models": ["m"], "provider": {"min_reputation": 2}}),
        "default.provider.min_reputation",
        "between 0 and 1",
    ),
    (default({"models": ["m"], "weight": 1}), "default.weight", "unknown field"),
]


@pytest.mark.parametrize(("document", "field", "fragment"), BAD_DOCUMENTS)
def test_invalid_documents_name_the_field(document: object, field: str, fragment: str) -> None:
    with pytest.raises(InvalidTaskRoute) as caught:
        parse_task_route(document)
    assert caught.value.field == field
    assert fragment in caught.value.problem
    assert str(caught.value) == f"{field}: {caught.value.problem}"


def test_invalid_task_route_is_a_value_error_and_a_scheduler_error() -> None:
    with pytest.raises(ValueError, match=r"^rules\[0\]\.when: must not be empty") as caught:
        parse_task_route(rule(when={}))
    assert isinstance(caught.value, SchedulerError)


def test_known_model_sees_each_model_as_written_and_its_reason_is_reported() -> None:
    seen: list[str] = []

    def known_model(model: str) -> str | None:
        seen.append(model)
        if model == "ghost:floor":
            return "no such model in the catalogue and no node serves it"
        return None

    document = document_of(
        {"name": "r0", "when": {"tools": True}, "models": ["m"]},
        {"name": "r1", "when": {"stream": True}, "models": ["real", "ghost:floor"]},
    )
    with pytest.raises(InvalidTaskRoute) as caught:
        parse_task_route(document, known_model=known_model)
    assert caught.value.field == "rules[1].models[1]"
    assert caught.value.problem == (
        "'ghost:floor': no such model in the catalogue and no node serves it"
    )
    assert seen == ["m", "real", "ghost:floor"]


def test_duplicate_rule_names_are_rejected() -> None:
    document = document_of(
        {"name": "r0", "when": {"tools": True}, "models": ["m"]},
        {"name": "r0", "when": {"stream": True}, "models": ["m"]},
    )
    with pytest.raises(InvalidTaskRoute) as caught:
        parse_task_route(document)
    assert caught.value.field == "rules[1].name"
    assert "duplicate" in caught.value.problem


# --- rules an earlier rule covers can never match ---

COVERING: list[tuple[dict[str, object], dict[str, object]]] = [
    ({"tools": True}, {"tools": True, "max_prompt_tokens": 100}),
    ({"tools": True}, {"tools": True}),
    ({"task": ["a", "b"]}, {"task": ["a"]}),
    ({"task": "a"}, {"task": ["a"], "stream": False}),
    ({"tags": ["x"]}, {"tags": ["x", "y"]}),
    ({"tags": ["x"]}, {"any_tags": ["x"]}),
    ({"any_tags": ["x", "y"]}, {"tags": ["x"]}),
    ({"any_tags": ["x", "y"]}, {"any_tags": ["x"]}),
    ({"any_tags": ["x", "y", "z"]}, {"any_tags": ["y", "x"]}),
    ({"max_prompt_tokens": 1000}, {"max_prompt_tokens": 500}),
    ({"min_prompt_tokens": 100}, {"min_prompt_tokens": 100, "max_prompt_tokens": 200}),
    (
        {"min_output_tokens": 10, "max_output_tokens": 20},
        {"min_output_tokens": 12, "max_output_tokens": 15},
    ),
    ({"metadata": {"k": "v"}}, {"metadata": {"k": "v", "k2": "v2"}}),
    (
        {"structured_output": True, "task": ["a"]},
        {"structured_output": True, "task": ["a"], "tags": ["x"]},
    ),
]

NOT_COVERING: list[tuple[dict[str, object], dict[str, object]]] = [
    ({"tools": True}, {"tools": False}),
    ({"tools": True}, {"stream": True}),
    ({"max_prompt_tokens": 100}, {"max_prompt_tokens": 500}),
    ({"max_prompt_tokens": 100}, {"min_prompt_tokens": 50}),
    ({"min_prompt_tokens": 100}, {"min_prompt_tokens": 50}),
    ({"min_output_tokens": 1}, {"max_output_tokens": 10}),
    ({"task": ["a"]}, {"task": ["a", "b"]}),
    ({"task": ["a"]}, {"tags": ["a"]}),
    ({"task": ["a"]}, {"metadata": {"task": "a"}}),  # conservative: not related
    ({"tags": ["x", "y"]}, {"tags": ["x"]}),
    ({"tags": ["x"]}, {"any_tags": ["x", "y"]}),
    ({"any_tags": ["x"]}, {"any_tags": ["x", "y"]}),
    ({"any_tags": ["x"]}, {"tags": ["y"]}),
    ({"metadata": {"k": "v"}}, {"metadata": {"k": "w"}}),
    ({"metadata": {"k": "v", "k2": "v2"}}, {"metadata": {"k": "v"}}),
    ({"tools": True, "stream": True}, {"tools": True}),
]


@pytest.mark.parametrize(("earlier", "later"), COVERING)
def test_a_rule_an_earlier_rule_covers_is_rejected(
    earlier: dict[str, object], later: dict[str, object]
) -> None:
    with pytest.raises(InvalidTaskRoute) as caught:
        parse_task_route(with_rules(earlier, later))
    assert caught.value.field == "rules[1]"
    assert (
        caught.value.problem
        == "can never match: rule 'r0' before it matches every request it would"
    )


@pytest.mark.parametrize(("earlier", "later"), NOT_COVERING)
def test_a_rule_an_earlier_rule_does_not_cover_is_accepted(
    earlier: dict[str, object], later: dict[str, object]
) -> None:
    route = parse_task_route(with_rules(earlier, later))
    assert [r.name for r in route.rules] == ["r0", "r1"]


def test_coverage_is_checked_against_every_earlier_rule() -> None:
    with pytest.raises(InvalidTaskRoute) as caught:
        parse_task_route(
            with_rules({"tools": True}, {"stream": True}, {"stream": True, "task": "a"})
        )
    assert caught.value.field == "rules[2]"
    assert "rule 'r1'" in caught.value.problem


# --- matching ---

SUPPORT_FEATURES = RequestFeatures(task="triage", prompt_tokens=2000, tools=True)


def test_the_first_matching_rule_wins() -> None:
    match = match_task_route(example(), SUPPORT_FEATURES)  # triage also has tools: triage first
    assert match.rule.name == "triage"
    assert match.rule.models == ("qwen/qwen-2.5-7b-instruct",)
    assert match.evaluated == (RuleEvaluation("triage", matched=True, reason=None),)


def test_later_rules_are_tried_with_reasons_for_each_miss() -> None:
    match = match_task_route(example(), replace(SUPPORT_FEATURES, prompt_tokens=2400))
    assert match.rule.name == "tools"
    assert match.evaluated == (
        RuleEvaluation(
            "triage", matched=False, reason="prompt 2400 tokens over max_prompt_tokens 2000"
        ),
        RuleEvaluation("tools", matched=True, reason=None),
    )


def test_the_default_is_used_when_no_rule_matches() -> None:
    match = match_task_route(example(), RequestFeatures(task="chat"))
    assert match.rule.name == "default"
    assert match.rule.models == ("meta-llama/llama-3.1-8b-instruct",)
    assert match.evaluated == (
        RuleEvaluation(
            "triage", matched=False, reason="task is 'chat', not one of classification, triage"
        ),
        RuleEvaluation("tools", matched=False, reason="no tools in the request"),
        RuleEvaluation("default", matched=True, reason=None),
    )
    assert match.to_json() == {
        "rule": "default",
        "models": ["meta-llama/llama-3.1-8b-instruct"],
        "provider": {"min_reputation": 0.5},
        "evaluated": [
            {
                "rule": "triage",
                "matched": False,
                "reason": "task is 'chat', not one of classification, triage",
            },
            {"rule": "tools", "matched": False, "reason": "no tools in the request"},
            {"rule": "default", "matched": True, "reason": None},
        ],
    }


@pytest.mark.parametrize(
    ("conditions", "features", "reason"),
    [
        (Conditions(task=("a",)), RequestFeatures(), "no task in the request, not one of a"),
        (
            Conditions(tags=("x", "urgent")),
            RequestFeatures(tags=frozenset({"x"})),
            "missing tag 'urgent'",
        ),
        (
            Conditions(any_tags=("x", "y")),
            RequestFeatures(tags=frozenset({"z"})),
            "none of the tags x, y",
        ),
        (Conditions(metadata=(("team", "ops"),)), RequestFeatures(), "no metadata 'team'"),
        (
            Conditions(metadata=(("team", "ops"),)),
            RequestFeatures(metadata={"team": "dev"}),
            "metadata 'team' is 'dev', not 'ops'",
        ),
        (Conditions(tools=False), RequestFeatures(tools=True), "the request has tools"),
        (
            Conditions(structured_output=True),
            RequestFeatures(),
            "the request does not ask for structured output",
        ),
        (
            Conditions(structured_output=False),
            RequestFeatures(structured_output=True),
            "the request asks for structured output",
        ),
        (Conditions(stream=True), RequestFeatures(), "the request is not streamed"),
        (Conditions(stream=False), RequestFeatures(stream=True), "the request is streamed"),
        (
            Conditions(min_prompt_tokens=500),
            RequestFeatures(prompt_tokens=100),
            "prompt 100 tokens under min_prompt_tokens 500",
        ),
        (
            Conditions(max_output_tokens=1000),
            RequestFeatures(output_tokens=4096),
            "output 4096 tokens over max_output_tokens 1000",
        ),
        (
            Conditions(min_output_tokens=1),
            RequestFeatures(),
            "output 0 tokens under min_output_tokens 1",
        ),
        (
            Conditions(task=("a",), tools=True),
            RequestFeatures(task="b"),
            "task is 'b', not one of a",  # the first failing condition is reported
        ),
    ],
)
def test_why_not_explains_the_first_failing_condition(
    conditions: Conditions, features: RequestFeatures, reason: str
) -> None:
    assert conditions.why_not(features) == reason


def test_every_condition_holding_is_a_match() -> None:
    conditions = parse_conditions(
        {
            "task": "a",
            "tags": ["x"],
            "any_tags": ["y", "z"],
            "metadata": {"team": "ops"},
            "tools": True,
            "structured_output": False,
            "stream": True,
            "min_prompt_tokens": 10,
            "max_prompt_tokens": 10,
            "min_output_tokens": 0,
            "max_output_tokens": 5,
        }
    )
    features = RequestFeatures(
        task="a",
        tags=frozenset({"x", "z"}),
        metadata={"team": "ops", "other": "1"},
        tools=True,
        stream=True,
        prompt_tokens=10,
        output_tokens=5,
    )
    assert conditions.why_not(features) is None
    assert Conditions().why_not(features) is None


def test_request_features_freeze_their_metadata_and_reject_negative_tokens() -> None:
    source = {"task": "a"}
    features = RequestFeatures(metadata=source, tags=frozenset({"b", "a"}))
    source["task"] = "changed"
    assert features.metadata == {"task": "a"}
    assert features.to_json()["tags"] == ["a", "b"]
    with pytest.raises(ValueError, match="negative"):
        RequestFeatures(prompt_tokens=-1)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("route:support-bot", "support-bot"),
        (f"{ROUTE_PREFIX}x", "x"),
        ("route:", None),
        ("meta-llama/llama-3.1-8b-instruct", None),
        ("router:x", None),
        ("x-route:y", None),
    ],
)
def test_route_name(model: str, name: str | None) -> None:
    assert route_name(model) == name


# --- properties ---

TASKS = ["a", "b", "c"]
TAGS = ["x", "y", "z"]
KEYS = ["k1", "k2"]
VALUES = ["v1", "v2"]
TOKENS = [0, 1, 5, 10, 100]

labels = st.lists(st.sampled_from(TAGS), max_size=3, unique=True).map(tuple)
bounds = st.none() | st.sampled_from(TOKENS)
flags = st.none() | st.booleans()
any_conditions = st.builds(
    Conditions,
    task=st.lists(st.sampled_from(TASKS), max_size=3, unique=True).map(tuple),
    tags=labels,
    any_tags=labels,
    metadata=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2).map(
        lambda pairs: tuple(pairs.items())
    ),
    tools=flags,
    structured_output=flags,
    stream=flags,
    min_prompt_tokens=bounds,
    max_prompt_tokens=bounds,
    min_output_tokens=bounds,
    max_output_tokens=bounds,
)


@st.composite
def features_near(draw: st.DrawFn, target: Conditions) -> RequestFeatures:
    """Random features, half of the time built to meet ``target`` where it can be met."""
    aim = draw(st.booleans())
    task = draw(st.none() | st.sampled_from(TASKS))
    if aim and target.task:
        task = draw(st.sampled_from(target.task))
    tags = set(draw(labels))
    metadata = draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2))
    if aim:
        tags |= set(target.tags)
        if target.any_tags:
            tags.add(draw(st.sampled_from(target.any_tags)))
        metadata.update(target.metadata)

    def flag(wanted: bool | None) -> bool:
        return wanted if aim and wanted is not None else draw(st.booleans())

    def tokens(low: int | None, high: int | None) -> int:
        # Counts on and next to the bounds in play, so that a wrong bound shows.
        near = sorted({max(0, t + step) for t in TOKENS for step in (-1, 0, 1)})
        within = [t for t in near if (low is None or t >= low) and (high is None or t <= high)]
        return draw(st.sampled_from(within if aim and within else near))

    return RequestFeatures(
        task=task,
        tags=frozenset(tags),
        metadata=metadata,
        tools=flag(target.tools),
        structured_output=flag(target.structured_output),
        stream=flag(target.stream),
        prompt_tokens=tokens(target.min_prompt_tokens, target.max_prompt_tokens),
        output_tokens=tokens(target.min_output_tokens, target.max_output_tokens),
    )


def conjoin(base: Conditions, extra: Conditions) -> Conditions:
    """``base`` plus ``extra``'s conditions where ``base`` has none: never wider than ``base``."""
    return Conditions(
        task=base.task or extra.task,
        tags=base.tags or extra.tags,
        any_tags=base.any_tags or extra.any_tags,
        metadata=base.metadata or extra.metadata,
        tools=extra.tools if base.tools is None else base.tools,
        structured_output=extra.structured_output
        if base.structured_output is None
        else base.structured_output,
        stream=extra.stream if base.stream is None else base.stream,
        min_prompt_tokens=extra.min_prompt_tokens
        if base.min_prompt_tokens is None
        else base.min_prompt_tokens,
        max_prompt_tokens=extra.max_prompt_tokens
        if base.max_prompt_tokens is None
        else base.max_prompt_tokens,
        min_output_tokens=extra.min_output_tokens
        if base.min_output_tokens is None
        else base.min_output_tokens,
        max_output_tokens=extra.max_output_tokens
        if base.max_output_tokens is None
        else base.max_output_tokens,
    )


@st.composite
def sparse_conditions(draw: st.DrawFn) -> Conditions:
    """One or two conditions, so that two drawn independently often cover one another."""
    full = draw(any_conditions)
    names = [field.name for field in fields(Conditions) if field.init]
    kept = draw(st.sets(st.sampled_from(names), max_size=2))
    kwargs: dict[str, Any] = {name: getattr(full, name) for name in kept}
    return Conditions(**kwargs)


sparse_pairs = st.tuples(sparse_conditions(), sparse_conditions())
pairs = st.one_of(
    st.tuples(any_conditions, any_conditions),
    st.tuples(any_conditions, any_conditions).map(lambda ab: (ab[0], conjoin(ab[0], ab[1]))),
    sparse_pairs,
    sparse_pairs,
)


@settings(max_examples=1000)
@given(pair=pairs, data=st.data())
def test_covers_is_sound(pair: tuple[Conditions, Conditions], data: st.DataObject) -> None:
    """If ``a`` covers ``b``, every request ``b`` matches, ``a`` matches too."""
    a, b = pair
    features = data.draw(features_near(b))
    if a.covers(b) and b.why_not(features) is None:
        assert a.why_not(features) is None


@given(base=any_conditions, extra=any_conditions)
def test_conditions_cover_themselves_and_anything_narrower(
    base: Conditions, extra: Conditions
) -> None:
    assert base.covers(base)
    assert base.covers(conjoin(base, extra))
    assert Conditions().covers(extra)


def satisfiable_bounds(c: Conditions) -> bool:
    return all(
        low is None or high is None or low <= high
        for low, high in (
            (c.min_prompt_tokens, c.max_prompt_tokens),
            (c.min_output_tokens, c.max_output_tokens),
        )
    )


@given(any_conditions.filter(satisfiable_bounds))
def test_conditions_round_trip_through_json(original: Conditions) -> None:
    assert parse_conditions(json.loads(json.dumps(original.to_json()))) == original


SINGLE_VALUES: dict[str, list[object]] = {
    "task": [["a"], ["b"], ["a", "b"]],
    "tags": [["x"], ["y"], ["x", "y"]],
    "any_tags": [["x"], ["y"], ["x", "y"]],
    "metadata": [{"k1": "v1"}, {"k1": "v2"}],
    "tools": [True, False],
    "structured_output": [True, False],
    "stream": [True, False],
    "min_prompt_tokens": [0, 1, 5],
    "max_prompt_tokens": [0, 1, 5],
    "min_output_tokens": [0, 5],
    "max_output_tokens": [0, 5],
}
SINGLE_CONDITIONS = [
    parse_conditions({key: value}) for key, values in SINGLE_VALUES.items() for value in values
]
GRID = [
    RequestFeatures(task, frozenset(tags), metadata, tools, structured, stream, prompt, output)
    for task in [None, "a", "b"]
    for tags in [(), ("x",), ("y",), ("x", "y")]
    for metadata in [{}, {"k1": "v1"}, {"k1": "v2"}]
    for tools in [False, True]
    for structured in [False, True]
    for stream in [False, True]
    for prompt in [0, 1, 2, 5, 6]
    for output in [0, 4, 5, 6]
]


def test_covers_is_sound_for_every_pair_of_single_conditions() -> None:
    """Exhaustive over small domains: every covered pair is checked on every request."""
    covered = [(a, b) for a in SINGLE_CONDITIONS for b in SINGLE_CONDITIONS if a.covers(b)]
    assert len(covered) > len(SINGLE_CONDITIONS)  # more than each covering itself
    for a, b in covered:
        for features in GRID:
            if b.why_not(features) is None:
                assert a.why_not(features) is None, (a, b, features)

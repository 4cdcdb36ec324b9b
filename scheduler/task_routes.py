"""Task routes: a named, ordered list of rules that picks models by what a request is for.

A customer or Builder stores a route; a request whose ``model`` is ``route:NAME`` (see
:func:`route_name`) goes to the models of the first rule whose ``when`` holds for the request,
else to the ``default`` rule's. Pure: no I/O and no clock. The coordinator stores documents,
extracts :class:`RequestFeatures` from each request and calls :func:`match_task_route`.

The document is what is PUT and what GET returns (:meth:`TaskRoute.to_json` is canonical and
round-trips through :func:`parse_task_route`)::

    {"name": "support-bot",                    # optional: the caller's name (from the URL) wins
     "description": "cheap for triage",        # optional, at most 500 characters
     "rules": [                                # optional, at most 32, tried in order
       {"name": "triage",                      # [a-z0-9][a-z0-9._-]{0,63}, unique, not "default"
        "when": {"task": ["triage"], "max_prompt_tokens": 2000},  # non-empty, every key must hold
        "models": ["qwen/qwen-2.5-7b-instruct"],                  # 1..8, no duplicates
        "provider": {"sort": "price"}}],                          # optional, as in a request
     "default": {"models": ["meta-llama/llama-3.1-8b-instruct"]}} # required; no "when"

``when`` keys: ``task`` (a string or list; ``metadata.task`` is one of them), ``tags`` (the request
carries all of them), ``any_tags`` (at least one), ``metadata`` (every pair equal), ``tools``,
``structured_output`` and ``stream`` (booleans), and the inclusive bounds ``min_prompt_tokens``,
``max_prompt_tokens``, ``min_output_tokens`` and ``max_output_tokens`` (integers, 0..10_000_000).

Parsing enforces every limit, rejects unknown keys, and rejects rules that can never match: bounds
that contradict, a rule an earlier one covers (:meth:`Conditions.covers`), and a rule that matches
every request (the default could never be used). Errors::

    SchedulerError
    └── InvalidTaskRoute   (also a ValueError) ``field`` is a path: ``rules[1].when.tags[0]``
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

from scheduler.errors import InvalidPreferences, SchedulerError
from scheduler.preferences import _MAX_MODELS, ProviderPreferences, parse_provider

__all__ = [
    "ROUTE_PREFIX",
    "Conditions",
    "InvalidTaskRoute",
    "KnownModel",
    "RequestFeatures",
    "Rule",
    "RuleEvaluation",
    "RuleMatch",
    "TaskRoute",
    "match_task_route",
    "parse_conditions",
    "parse_task_route",
    "route_name",
]

ROUTE_PREFIX: Final = "route:"
_DEFAULT_RULE: Final = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_NAME_RULE = "must be 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
_MAX_RULES = 32
_MAX_DESCRIPTION = 500
_MAX_LABELS = 16
_MAX_LABEL = 64
_MAX_METADATA_VALUE = 512
_MAX_MODEL_NAME = 256
# A rule's models become the request's model and fallbacks, so they share the request's cap.
_MAX_MODELS_PER_RULE = _MAX_MODELS
_MAX_TOKENS = 10_000_000
_ROUTE_KEYS = ("name", "description", "rules", "default")
_RULE_KEYS = ("name", "when", "models", "provider")
_DEFAULT_KEYS = ("name", "models", "provider")
_WHEN_KEYS = (
    "task",
    "tags",
    "any_tags",
    "metadata",
    "tools",
    "structured_output",
    "stream",
    "min_prompt_tokens",
    "max_prompt_tokens",
    "min_output_tokens",
    "max_output_tokens",
)

KnownModel = Callable[[str], str | None]
"""Returns ``None`` when a model may be routed to, else why not (shown to the route's author)."""

_T = TypeVar("_T")


class InvalidTaskRoute(SchedulerError, ValueError):
    """A route document is malformed; ``field`` is its path (``rules[0].models[2]``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _empty_metadata() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What a rule can look at in one request; the coordinator extracts it from the body.

    ``tags`` are ``metadata.tags`` split on commas; ``prompt_tokens`` is the estimated prompt and
    ``output_tokens`` the requested ``max_tokens``. ``metadata`` is copied and frozen on
    construction. Raises :class:`ValueError` for a negative token count.
    """

    task: str | None = None
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = field(default_factory=_empty_metadata)
    tools: bool = False
    structured_output: bool = False
    stream: bool = False
    prompt_tokens: int = 0
    output_tokens: int = 0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.output_tokens < 0:
            raise ValueError("token counts cannot be negative")
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def to_json(self) -> dict[str, object]:
        return {
            "task": self.task,
            "tags": sorted(self.tags),
            "metadata": dict(self.metadata),
            "tools": self.tools,
            "structured_output": self.structured_output,
            "stream": self.stream,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True, slots=True)
class Conditions:
    """A rule's ``when``: every present condition must hold. Empty tuples and ``None`` are absent.

    :func:`parse_conditions` enforces the limits; constructing one directly does not.
    ``metadata`` is ``(key, value)`` pairs in document order.
    """

    task: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    any_tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    tools: bool | None = None
    structured_output: bool | None = None
    stream: bool | None = None
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    min_output_tokens: int | None = None
    max_output_tokens: int | None = None
    # Sets for matching, built once here so the request path only does set operations.
    _tasks: frozenset[str] = field(init=False, repr=False, compare=False)
    _tags: frozenset[str] = field(init=False, repr=False, compare=False)
    _any_tags: frozenset[str] = field(init=False, repr=False, compare=False)
    _pairs: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tasks", frozenset(self.task))
        object.__setattr__(self, "_tags", frozenset(self.tags))
        object.__setattr__(self, "_any_tags", frozenset(self.any_tags))
        object.__setattr__(self, "_pairs", frozenset(self.metadata))

    def why_not(self, features: RequestFeatures) -> str | None:
        """``None`` when ``features`` satisfy every condition, else why the first one fails."""
        return (
            self._label_mismatch(features)
            or self._metadata_mismatch(features)
            or self._flag_mismatch(features)
            or _bound_mismatch(
                "prompt", features.prompt_tokens, self.min_prompt_tokens, self.max_prompt_tokens
            )
            or _bound_mismatch(
                "output", features.output_tokens, self.min_output_tokens, self.max_output_tokens
            )
        )

    def _label_mismatch(self, features: RequestFeatures) -> str | None:
        if self._tasks and features.task not in self._tasks:
            wanted = ", ".join(self.task)
            if features.task is None:
                return f"no task in the request, not one of {wanted}"
            return f"task is {features.task!r}, not one of {wanted}"
        if self._tags and not self._tags <= features.tags:
            missing = next(tag for tag in self.tags if tag not in features.tags)
            return f"missing tag {missing!r}"
        if self._any_tags and self._any_tags.isdisjoint(features.tags):
            return f"none of the tags {', '.join(self.any_tags)}"
        return None

    def _metadata_mismatch(self, features: RequestFeatures) -> str | None:
        for key, value in self.metadata:
            actual = features.metadata.get(key)
            if actual is None:
                return f"no metadata {key!r}"
            if actual != value:
                return f"metadata {key!r} is {actual!r}, not {value!r}"
        return None

    def _flag_mismatch(self, features: RequestFeatures) -> str | None:
        if self.tools is not None and self.tools != features.tools:
            return "no tools in the request" if self.tools else "the request has tools"
        if self.structured_output is not None and self.structured_output != (
            features.structured_output
        ):
            if self.structured_output:
                return "the request does not ask for structured output"
            return "the request asks for structured output"
        if self.stream is not None and self.stream != features.stream:
            return "the request is not streamed" if self.stream else "the request is streamed"
        return None

    def covers(self, other: Conditions) -> bool:
        """True only if every request matching ``other`` also matches ``self``.

        Sound but not complete: ``False`` may also mean "not sure". ``task`` and
        ``metadata.task`` are not related to each other, nor are bounds to the token limits.
        """
        return (
            self._covers_labels(other)
            and _same_or_unset(self.tools, other.tools)
            and _same_or_unset(self.structured_output, other.structured_output)
            and _same_or_unset(self.stream, other.stream)
            and _at_least(self.min_prompt_tokens, other.min_prompt_tokens)
            and _at_most(self.max_prompt_tokens, other.max_prompt_tokens)
            and _at_least(self.min_output_tokens, other.min_output_tokens)
            and _at_most(self.max_output_tokens, other.max_output_tokens)
        )

    def _covers_labels(self, other: Conditions) -> bool:
        if self._tasks and not (other._tasks and other._tasks <= self._tasks):
            return False
        # Tags every request matching ``other`` carries; a single ``any_tags`` entry is required.
        carried = other._tags | other._any_tags if len(other._any_tags) == 1 else other._tags
        if not self._tags <= carried:
            return False
        if self._any_tags and not (
            not self._any_tags.isdisjoint(carried)
            or (other._any_tags and other._any_tags <= self._any_tags)
        ):
            return False
        return self._pairs <= other._pairs

    def to_json(self) -> dict[str, object]:
        """The canonical ``when`` object: only present keys, lists in document order."""
        out: dict[str, object] = {}
        for key, labels in (("task", self.task), ("tags", self.tags), ("any_tags", self.any_tags)):
            if labels:
                out[key] = list(labels)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        scalars: tuple[tuple[str, bool | int | None], ...] = (
            ("tools", self.tools),
            ("structured_output", self.structured_output),
            ("stream", self.stream),
            ("min_prompt_tokens", self.min_prompt_tokens),
            ("max_prompt_tokens", self.max_prompt_tokens),
            ("min_output_tokens", self.min_output_tokens),
            ("max_output_tokens", self.max_output_tokens),
        )
        out.update((key, value) for key, value in scalars if value is not None)
        return out


_ANY_REQUEST = Conditions()


def _bound_mismatch(what: str, tokens: int, low: int | None, high: int | None) -> str | None:
    if low is not None and tokens < low:
        return f"{what} {tokens} tokens under min_{what}_tokens {low}"
    if high is not None and tokens > high:
        return f"{what} {tokens} tokens over max_{what}_tokens {high}"
    return None


def _same_or_unset(mine: bool | None, theirs: bool | None) -> bool:
    return mine is None or mine == theirs


def _at_least(mine: int | None, theirs: int | None) -> bool:
    # Token counts are never negative, so a lower bound of 0 holds for every request.
    return not mine or (theirs is not None and theirs >= mine)


def _at_most(mine: int | None, theirs: int | None) -> bool:
    return mine is None or (theirs is not None and theirs <= mine)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a route; the default rule is named ``"default"`` and has empty ``when``.

    ``provider_json`` is the ``provider`` object as written (frozen; ``{}`` when absent) so it
    can be shown back; ``provider`` is its parsed form.
    """

    name: str
    when: Conditions
    models: tuple[str, ...]
    provider: ProviderPreferences
    provider_json: Mapping[str, object]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name}
        if self.when != _ANY_REQUEST:
            out["when"] = self.when.to_json()
        out["models"] = list(self.models)
        if self.provider_json:
            out["provider"] = _thaw_object(self.provider_json)
        return out


@dataclass(frozen=True, slots=True)
class TaskRoute:
    name: str
    description: str
    rules: tuple[Rule, ...]
    default: Rule

    def to_json(self) -> dict[str, object]:
        """The canonical document; :func:`parse_task_route` of it gives an equal route."""
        return {
            "name": self.name,
            "description": self.description,
            "rules": [rule.to_json() for rule in self.rules],
            "default": self.default.to_json(),
        }


@dataclass(frozen=True, slots=True)
class RuleEvaluation:
    """One rule tried for a request: ``reason`` says why it did not match (``None`` if it did)."""

    rule: str
    matched: bool
    reason: str | None

    def to_json(self) -> dict[str, object]:
        return {"rule": self.rule, "matched": self.matched, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The chosen rule and every rule tried, in order, ending with the chosen one."""

    rule: Rule
    evaluated: tuple[RuleEvaluation, ...]

    def to_json(self) -> dict[str, object]:
        """For a dry run: the chosen rule's name, models and provider, and the trail."""
        return {
            "rule": self.rule.name,
            "models": list(self.rule.models),
            "provider": _thaw_object(self.rule.provider_json),
            "evaluated": [evaluation.to_json() for evaluation in self.evaluated],
        }


def route_name(model: str) -> str | None:
    """``"route:support-bot"`` -> ``"support-bot"``; ``None`` for anything else (and ``"route:"``).

    The name is not validated: an invalid one is simply a route that does not exist.
    """
    name = model.removeprefix(ROUTE_PREFIX)
    return name if name and len(name) < len(model) else None


def match_task_route(route: TaskRoute, features: RequestFeatures) -> RuleMatch:
    """The first rule whose conditions hold, else the default; never raises."""
    evaluated: list[RuleEvaluation] = []
    for rule in route.rules:
        reason = rule.when.why_not(features)
        evaluated.append(RuleEvaluation(rule.name, reason is None, reason))
        if reason is None:
            return RuleMatch(rule, tuple(evaluated))
    evaluated.append(RuleEvaluation(route.default.name, matched=True, reason=None))
    return RuleMatch(route.default, tuple(evaluated))


def _every_model_known(_model: str) -> str | None:
    return None


def parse_task_route(
    document: object, *, known_model: KnownModel = _every_model_known, name: str | None = None
) -> TaskRoute:
    """Validate a route document; raises :class:`InvalidTaskRoute` naming the first bad field.

    ``name`` (from the URL) wins over the document's, which, if present, must equal it.
    ``known_model`` is called with each model exactly as written.
    """
    doc = _object(document, "", _ROUTE_KEYS)
    resolved_name = _route_name(doc, name)
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise InvalidTaskRoute("description", f"must be a string of at most {_MAX_DESCRIPTION}")
    rules = _parse_rules(doc.get("rules", []), known_model)
    default = _parse_default(_required(doc, "default", ""), known_model)
    return TaskRoute(resolved_name, description, rules, default)


def parse_conditions(value: object, path: str = "when") -> Conditions:
    """Parse a ``when`` object (``{}`` gives conditions every request meets)."""
    when = _object(value, path, _WHEN_KEYS)
    conditions = Conditions(
        task=_get(when, "task", path, _tasks) or (),
        tags=_get(when, "tags", path, _labels) or (),
        any_tags=_get(when, "any_tags", path, _labels) or (),
        metadata=_get(when, "metadata", path, _metadata) or (),
        tools=_get(when, "tools", path, _bool),
        structured_output=_get(when, "structured_output", path, _bool),
        stream=_get(when, "stream", path, _bool),
        min_prompt_tokens=_get(when, "min_prompt_tokens", path, _tokens),
        max_prompt_tokens=_get(when, "max_prompt_tokens", path, _tokens),
        min_output_tokens=_get(when, "min_output_tokens", path, _tokens),
        max_output_tokens=_get(when, "max_output_tokens", path, _tokens),
    )
    _check_bounds("prompt", conditions.min_prompt_tokens, conditions.max_prompt_tokens, path)
    _check_bounds("output", conditions.min_output_tokens, conditions.max_output_tokens, path)
    return conditions


def _route_name(doc: Mapping[str, object], given: str | None) -> str:
    if given is None:
        return _name(_required(doc, "name", ""), "name")
    _name(given, "name")
    if "name" in doc and doc["name"] != given:
        raise InvalidTaskRoute("name", f"{doc['name']!r} does not match the route's name {given!r}")
    return given


def _parse_rules(value: object, known_model: KnownModel) -> tuple[Rule, ...]:
    if not isinstance(value, list) or len(value) > _MAX_RULES:
        raise InvalidTaskRoute("rules", f"must be a list of at most {_MAX_RULES} rules")
    rules: list[Rule] = []
    for index, item in enumerate(value):
        rule = _parse_rule(item, f"rules[{index}]", known_model)
        _check_reachable(rule, rules, f"rules[{index}]")
        rules.append(rule)
    return tuple(rules)


def _parse_rule(value: object, path: str, known_model: KnownModel) -> Rule:
    rule = _object(value, path, _RULE_KEYS)
    name = _name(_required(rule, "name", path), f"{path}.name")
    if name == _DEFAULT_RULE:
        raise InvalidTaskRoute(f"{path}.name", "'default' is reserved for the default rule")
    when = parse_conditions(_required(rule, "when", path), f"{path}.when")
    if when == _ANY_REQUEST:
        raise InvalidTaskRoute(f"{path}.when", "must not be empty: that is what the default is for")
    if when.covers(_ANY_REQUEST):
        raise InvalidTaskRoute(
            f"{path}.when", "matches every request, so the default is never used"
        )
    models = _models(_required(rule, "models", path), f"{path}.models", known_model)
    provider, provider_json = _provider(rule, f"{path}.provider")
    return Rule(name, when, models, provider, provider_json)


def _check_reachable(rule: Rule, earlier: list[Rule], path: str) -> None:
    for index, before in enumerate(earlier):
        if before.name == rule.name:
            raise InvalidTaskRoute(
                f"{path}.name", f"duplicate of rules[{index}].name {rule.name!r}"
            )
    for before in earlier:
        if before.when.covers(rule.when):
            raise InvalidTaskRoute(
                path,
                f"can never match: rule {before.name!r} before it matches every request it would",
            )


def _parse_default(value: object, known_model: KnownModel) -> Rule:
    if isinstance(value, Mapping) and "when" in value:
        raise InvalidTaskRoute("default.when", "the default has no conditions: it is the fallback")
    rule = _object(value, "default", _DEFAULT_KEYS)
    if "name" in rule and rule["name"] != _DEFAULT_RULE:
        raise InvalidTaskRoute("default.name", "must be 'default' or left out")
    models = _models(_required(rule, "models", "default"), "default.models", known_model)
    provider, provider_json = _provider(rule, "default.provider")
    return Rule(_DEFAULT_RULE, _ANY_REQUEST, models, provider, provider_json)


def _models(value: object, path: str, known_model: KnownModel) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_MODELS_PER_RULE:
        raise InvalidTaskRoute(path, f"must be a list of 1 to {_MAX_MODELS_PER_RULE} model names")
    seen: set[str] = set()
    for index, model in enumerate(value):
        item = f"{path}[{index}]"
        if not isinstance(model, str) or not model or len(model) > _MAX_MODEL_NAME:
            raise InvalidTaskRoute(
                item, f"must be a model name of 1 to {_MAX_MODEL_NAME} characters"
            )
        if model in seen:
            raise InvalidTaskRoute(item, f"{model!r} is listed twice")
        problem = known_model(model)
        if problem is not None:
            raise InvalidTaskRoute(item, f"{model!r}: {problem}")
        seen.add(model)
    return tuple(value)


def _provider(
    rule: Mapping[str, object], path: str
) -> tuple[ProviderPreferences, Mapping[str, object]]:
    if "provider" not in rule:
        return ProviderPreferences(), MappingProxyType({})
    raw = rule["provider"]
    if not isinstance(raw, Mapping):
        raise InvalidTaskRoute(path, "must be an object")
    try:
        provider = parse_provider(raw, path)
    except InvalidPreferences as exc:
        raise InvalidTaskRoute(exc.field, exc.problem) from exc
    return provider, _freeze_object(raw)


# --- small typed readers; each raises InvalidTaskRoute naming ``path`` ---


def _object(value: object, path: str, allowed: tuple[str, ...]) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidTaskRoute(path or "document", "must be an object")
    for key in value:
        if key not in allowed:
            raise InvalidTaskRoute(
                _join(path, str(key)), f"unknown field; expected one of {', '.join(allowed)}"
            )
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _required(obj: Mapping[str, object], key: str, path: str) -> object:
    if key not in obj:
        raise InvalidTaskRoute(_join(path, key), "required")
    return obj[key]


def _get(
    obj: Mapping[str, object], key: str, path: str, read: Callable[[object, str], _T]
) -> _T | None:
    return read(obj[key], f"{path}.{key}") if key in obj else None


def _name(value: object, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidTaskRoute(path, _NAME_RULE)
    return value


def _label(value: object, path: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_LABEL:
        raise InvalidTaskRoute(path, f"must be a string of 1 to {_MAX_LABEL} characters")
    return value


def _labels(value: object, path: str) -> tuple[str, ...]:
    """A non-empty list of labels, duplicates dropped (first kept)."""
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_LABELS:
        raise InvalidTaskRoute(path, f"must be a list of 1 to {_MAX_LABELS} strings")
    labels = [_label(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return tuple(dict.fromkeys(labels))


def _tasks(value: object, path: str) -> tuple[str, ...]:
    return (_label(value, path),) if isinstance(value, str) else _labels(value, path)


def _metadata(value: object, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or not 1 <= len(value) <= _MAX_LABELS:
        raise InvalidTaskRoute(path, f"must be an object of 1 to {_MAX_LABELS} strings")
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        item_path = f"{path}.{key}"
        _label(key, item_path)
        if not isinstance(item, str) or len(item) > _MAX_METADATA_VALUE:
            raise InvalidTaskRoute(
                item_path, f"must be a string of at most {_MAX_METADATA_VALUE} characters"
            )
        pairs.append((key, item))
    return tuple(pairs)


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidTaskRoute(path, "must be a boolean")
    return value


def _tokens(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TOKENS:
        raise InvalidTaskRoute(path, f"must be an integer from 0 to {_MAX_TOKENS}")
    return value


def _check_bounds(what: str, low: int | None, high: int | None, path: str) -> None:
    if low is not None and high is not None and low > high:
        raise InvalidTaskRoute(
            f"{path}.min_{what}_tokens",
            f"min_{what}_tokens {low} is over max_{what}_tokens {high}: the rule can never match",
        )


def _freeze_object(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType({str(key): _freeze(item) for key, item in value.items()})


def _freeze(value: object) -> object:
    if isinstance(value, Mapping):
        return _freeze_object(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw_object(value: Mapping[str, object]) -> dict[str, object]:
    return {key: _thaw(item) for key, item in value.items()}


def _thaw(value: object) -> object:
    if isinstance(value, Mapping):
        return _thaw_object(value)
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value

"""Checks one Pinterest event against the official `ConversionEvents` schema and the rules it omits.

The schema is compiled once into nested checker closures: objects dispatch each key through a
dict, scalar leaves are a set of allowed Python types (so `bool` never passes for an integer),
and `anyOf` branches that share one `$ref` check the properties once and then only the
`required` lists. A keyword the compiler does not know fails compilation, so a spec update
cannot silently weaken validation. Problems are `(path, message)` pairs that name fields, never
values; an unknown key is named as the message wrote it, so what goes into logs and dead-letter
headers passes the path through `safe_path` first.

On the forwarder's hot path `encoded_checker` answers first: the same schema compiled into msgspec
struct types checks the event's JSON encoding in C, several times faster than the closures. Only
"valid" is taken from it; anything it refuses is checked again by the closures, which name the
problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Final

import msgspec

from stream.dlq.contract import DeadLetterReason
from stream.spec import ACTION_SOURCES, EVENT_NAMES, schema
from stream.spec.compiled import (
    ANNOTATIONS,
    Alternatives,
    StructCompiler,
    refuse_unknown_keywords,
)

Problem = tuple[str, str]
Check = Callable[[Any], Problem | None]
# A bare class means "exactly this class, nothing else to check": the hot path of most leaves.
Rule = type | Check

MAX_FUTURE_S: Final = 300
MAX_AGE_S: Final = 7 * 24 * 3600
MAX_SHAPES: Final = 1024
UNKNOWN_KEY: Final = "<unknown key>"
# A key and its array indexes; an index of 7+ digits is no array position a message under
# kafka.max_message_bytes can have, but could be a phone number in a key.
_PATH_SEGMENT: Final = re.compile(r"([^.\[\]]*)(?:\[[0-9]{1,6}\])*")

_TYPES: Final[Mapping[str, frozenset[type]]] = {
    "string": frozenset({str}),
    "integer": frozenset({int}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
}
_TYPE_NAMES: Final[Mapping[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def _join(key: str, problem: Problem) -> Problem:
    path, message = problem
    if not path:
        return key, message
    return (key + path if path.startswith("[") else f"{key}.{path}"), message


def _expected(allowed: frozenset[type]) -> str:
    return "expected " + " or ".join(sorted(_TYPE_NAMES[t] for t in allowed))


def _apply(rule: Rule, value: Any) -> Problem | None:
    if isinstance(rule, type):
        return None if value.__class__ is rule else ("", _expected(frozenset({rule})))
    return rule(value)


class _Compiler:
    def __init__(self, definitions: Mapping[str, Any]) -> None:
        self._definitions = definitions
        self._refs: dict[str, Rule] = {}

    def compile(self, node: Mapping[str, Any]) -> Rule:
        refuse_unknown_keywords(node)
        if "$ref" in node:
            return self._ref(node["$ref"])
        if "anyOf" in node:
            return self._any_of(node)
        kind = str(node.get("type"))
        if kind not in _TYPES:
            raise ValueError(f"schema type not supported: {kind!r}")
        allowed = _TYPES[kind] | (frozenset({type(None)}) if node.get("nullable") else frozenset())
        if kind == "object":
            return self._object(node, allowed)
        if kind == "array":
            return self._array(node, allowed)
        checks: list[Check] = []
        if "enum" in node:
            choices = frozenset(node["enum"])
            checks.append(lambda v: None if v in choices else ("", "not an allowed value"))
        if "maxLength" in node:
            longest = int(node["maxLength"])
            checks.append(lambda v: None if len(v) <= longest else ("", f"longer than {longest}"))
        if "minimum" in node:
            low = node["minimum"]
            checks.append(lambda v: None if v >= low else ("", f"less than {low}"))
        if "maximum" in node:
            high = node["maximum"]
            checks.append(lambda v: None if v <= high else ("", f"greater than {high}"))
        if not checks and len(allowed) == 1:
            return next(iter(allowed))
        return self._scalar(allowed, tuple(checks))

    def _ref(self, ref: str) -> Rule:
        name = ref.rsplit("/", 1)[-1]
        if name not in self._refs:
            self._refs[name] = self.compile(self._definitions[name])
        return self._refs[name]

    @staticmethod
    def _scalar(allowed: frozenset[type], checks: tuple[Check, ...]) -> Check:
        expected = _expected(allowed)

        def check(value: Any) -> Problem | None:
            if value.__class__ not in allowed:
                return "", expected
            if value is None:
                return None
            for extra in checks:
                problem = extra(value)
                if problem is not None:
                    return problem
            return None

        return check

    def _object(self, node: Mapping[str, Any], allowed: frozenset[type]) -> Check:  # noqa: C901 - its closures are the hot-path checks, split by case on purpose
        schemas: Mapping[str, Any] = node.get("properties", {})
        rules = {key: self.compile(sub) for key, sub in schemas.items()}
        # Split so that the common cases cost no call: a leaf of exactly one class, and an
        # unbounded array of one class (user_data's hashed fields).
        classes = {key: rule for key, rule in rules.items() if isinstance(rule, type)}
        lists: dict[str, type] = {}
        for key, sub in schemas.items():
            if sub.get("type") == "array" and set(sub) - ANNOTATIONS == {"type", "items"}:
                item_rule = self.compile(sub["items"])
                if isinstance(item_rule, type):
                    lists[key] = item_rule
        checks = {
            key: rule
            for key, rule in rules.items()
            if not isinstance(rule, type) and key not in lists
        }
        required = frozenset(node.get("required", ()))
        order = tuple(node.get("required", ()))
        closed = node.get("additionalProperties", True) is False
        known = frozenset(rules)
        expected = _expected(allowed)
        # Valid "shapes" (key order + value classes) seen before: for those, the keys, required
        # members and leaf types are known good and only arrays and nested rules still run.
        # Bounded, so hostile input cannot grow it.
        shapes: dict[tuple[Any, ...], tuple[tuple[tuple[str, type], ...], tuple[str, ...]]] = {}

        def deep(value: dict[str, Any], array_keys: Any, nested_keys: Any) -> Problem | None:
            for key in array_keys:
                cls = lists[key]
                for index, item in enumerate(value[key]):
                    if item.__class__ is not cls:
                        return f"{key}[{index}]", _expected(frozenset({cls}))
            for key in nested_keys:
                problem = checks[key](value[key])
                if problem is not None:
                    return _join(key, problem)
            return None

        def full(value: dict[str, Any]) -> Problem | None:
            keys = value.keys()
            if not required <= keys:
                return next(key for key in order if key not in value), "required"
            if closed and not keys <= known:
                return str(next(key for key in keys if key not in known)), "unknown field"
            for key, item in value.items():
                cls = classes.get(key)
                if cls is not None and item.__class__ is not cls:
                    return key, _expected(frozenset({cls}))
                if key in lists and item.__class__ is not list:
                    return key, "expected array"
            return deep(value, (k for k in value if k in lists), (k for k in value if k in checks))

        def check(value: Any) -> Problem | None:
            if value.__class__ is not dict:
                return None if value.__class__ in allowed else ("", expected)
            shape = (*value, *map(type, value.values()))
            known_shape = shapes.get(shape)
            if known_shape is None:
                problem = full(value)
                if problem is None and len(shapes) < MAX_SHAPES:
                    shapes[shape] = (
                        tuple((k, lists[k]) for k in value if k in lists),
                        tuple(k for k in value if k in checks),
                    )
                return problem
            arrays, nested_keys = known_shape
            for key, cls in arrays:
                for item in value[key]:
                    if item.__class__ is not cls:
                        return full(value)  # names the offending item
            for key in nested_keys:
                problem = checks[key](value[key])
                if problem is not None:
                    return _join(key, problem)
            return None

        return check

    def _array(self, node: Mapping[str, Any], allowed: frozenset[type]) -> Check:
        items: Rule | None = self.compile(node["items"]) if "items" in node else None
        fewest = int(node.get("minItems", 0))
        most = node.get("maxItems")
        expected = _expected(allowed)

        def check(value: Any) -> Problem | None:
            if value.__class__ is not list:
                return None if value.__class__ in allowed else ("", expected)
            if len(value) < fewest:
                return "", f"fewer than {fewest} items"
            if most is not None and len(value) > most:
                return "", f"more than {most} items"
            if items is None:
                return None
            if isinstance(items, type):
                for index, item in enumerate(value):
                    if item.__class__ is not items:
                        return f"[{index}]", _expected(frozenset({items}))
                return None
            for index, item in enumerate(value):
                problem = items(item)
                if problem is not None:
                    return _join(f"[{index}]", problem)
            return None

        return check

    def _any_of(self, node: Mapping[str, Any]) -> Check:
        branches = node["anyOf"]
        refs = {branch.get("$ref") for branch in branches}
        shared = len(refs) == 1 and None not in refs
        if shared and all(set(b) - ANNOTATIONS <= {"$ref", "required"} for b in branches):
            # Pinterest's user_data: one property set, several alternative `required` lists.
            base = self._ref(str(next(iter(refs))))
            base_check: Check = base if not isinstance(base, type) else partial(_apply, base)
            alternatives = tuple(tuple(b.get("required", ())) for b in branches)
            needs = " or ".join(" with ".join(b.get("required", ())) for b in branches)

            def shared_check(value: Any) -> Problem | None:
                problem = base_check(value)
                if problem is not None:
                    return problem
                for alternative in alternatives:
                    for key in alternative:
                        if key not in value:
                            break
                    else:
                        return None
                return "", f"needs {needs}"

            return shared_check
        rules = tuple(self.compile(branch) for branch in branches)

        def any_check(value: Any) -> Problem | None:
            first: Problem | None = None
            for rule in rules:
                problem = _apply(rule, value)
                if problem is None:
                    return None
                first = first or problem
            return first

        return any_check


def compile_schema(root: Mapping[str, Any]) -> Rule:
    """Compiles a self-contained JSON Schema (as from `stream.spec.schema`) into a checker."""
    return _Compiler(root.get("definitions", {})).compile(root)


@cache
def event_checker() -> Rule:
    """The compiled schema of one element of `ConversionEvents.data`."""
    root = schema("ConversionEvents")
    event_schema = {**root["properties"]["data"]["items"], "definitions": root["definitions"]}
    return compile_schema(event_schema)


@cache
def _vocabulary() -> frozenset[str]:
    """Every property name of the event schema, at any depth."""
    root = schema("ConversionEvents")
    definitions = root["definitions"]
    names: set[str] = set()
    followed: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in followed:
                followed.add(ref)
                walk(definitions[ref.rsplit("/", 1)[-1]])
            properties = node.get("properties")
            if isinstance(properties, dict):
                names.update(properties)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(root["properties"]["data"]["items"])
    return frozenset(names)


def safe_path(path: str) -> str:
    """`path` up to its first key that is not a spec property name, which becomes
    `<unknown key>`: an input key may be anything, an email address included. The validator
    never looks inside an unknown key, so nothing after it is worth naming."""
    vocabulary = _vocabulary()
    safe: list[str] = []
    for segment in path.split("."):
        match = _PATH_SEGMENT.fullmatch(segment)
        key = match[1] if match is not None else None
        # Only the first segment may be a bare index (a problem in a top-level array).
        if key is None or (key not in vocabulary and (key or safe)):
            safe.append(UNKNOWN_KEY)
            break
        safe.append(segment)
    return ".".join(safe)


def event_problem(event: Any) -> Problem | None:
    """The first way `event` breaks the spec's event schema, as `(path, message)`, or None."""
    return _apply(event_checker(), event)


def check_event(event: Any) -> str | None:
    """The JSON path (e.g. `custom_data.contents[0].item_price`) where `event` breaks the spec."""
    problem = event_problem(event)
    if problem is None:
        return None
    return problem[0] or "$"


EncodedCheck = Callable[[bytes, Mapping[str, Any]], Problem | None]
ConstructedCheck = Callable[[Mapping[str, Any]], Problem | None]


@cache
def _event_struct() -> tuple[Any, tuple[Alternatives, ...]]:
    """The event schema as a msgspec type, and the `anyOf` alternatives it leaves to callers."""
    root = schema("ConversionEvents")
    compiler = StructCompiler(root["definitions"])
    struct = compiler.type_of(root["properties"]["data"]["items"], "Event", top=True)
    return struct, tuple(compiler.alternatives)


def _named(event: Mapping[str, Any]) -> Problem:
    # The fast checks and the closures disagreeing would be a bug; refusing is the safe answer.
    return _apply(event_checker(), event) or ("", "does not match the schema")


def _alternatives_check(alternatives: tuple[Alternatives, ...]) -> ConstructedCheck:
    def check(event: Mapping[str, Any]) -> Problem | None:
        # Plain loops: generator expressions cost more than the membership tests they run.
        for key, options in alternatives:
            value = event.get(key)
            if value is None:
                continue
            for option in options:
                for required in option:
                    if required not in value:
                        break
                else:
                    break
            else:
                return _named(event)
        return None

    return check


@cache
def encoded_checker() -> EncodedCheck:
    """`check(body, event)`: the problem of `event`, whose JSON encoding is `body`, or None.

    msgspec decodes `body` against the schema in C; only a refusal costs the closure check
    (`event_checker`), which names the problem exactly as `event_problem` does.
    """
    struct, alternatives = _event_struct()
    decode = msgspec.json.Decoder(struct).decode
    required_alternatives = _alternatives_check(alternatives)

    def check(body: bytes, event: Mapping[str, Any]) -> Problem | None:
        try:
            decode(body)
        except msgspec.ValidationError:
            return _named(event)
        return required_alternatives(event)

    return check


@cache
def constructed_checker() -> ConstructedCheck:
    """`check(event)` for events whose construction guarantees the schema's keys and types.

    The Segment mapper builds events only from spec keys, with values of the spec's types
    (strings from `text`, integers from `integer`, arrays of hex digests) and no length limits
    apply to them, so of the schema only what depends on the message remains: the `required`
    alternatives of `anyOf` (user_data's identifier rule). That saves decoding the event again
    on the hot path. Tests check that this agrees with `encoded_checker` on every mapped event.
    A refusal is named by the closures, exactly as `event_problem` names it.
    """
    return _alternatives_check(_event_struct()[1])


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why an event cannot be sent: `too_old` or `invalid_event`, with a PII-free message."""

    reason: DeadLetterReason
    message: str


def check_rules(event: Mapping[str, Any], now: float) -> Verdict | None:
    """The rules beyond the schema: event name, action source and the accepted time window.

    Call after the schema check, which guarantees the types these rules read.
    """
    if not event["event_id"]:
        return Verdict("invalid_event", "event_id: empty")
    if event["event_name"] not in EVENT_NAMES:
        return Verdict("invalid_event", "event_name: not a Pinterest event name")
    if event["action_source"] not in ACTION_SOURCES:
        return Verdict(
            "invalid_event", "action_source: not one of web, app_android, app_ios, offline"
        )
    event_time = event["event_time"]
    if event_time > now + MAX_FUTURE_S:
        return Verdict("invalid_event", "event_time: more than 5 minutes in the future")
    if event_time < now - MAX_AGE_S:
        return Verdict("too_old", "event_time: older than 7 days")
    return None

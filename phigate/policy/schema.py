"""Validation of one policy file (already parsed to plain values) into Policy objects.

Every problem is reported against the field path it concerns (`policies[0].masking.request.
default`) and the line that path starts on. Unknown fields are errors: a misspelt
`forbiden_entities` must not silently turn a protection off. Values are named in messages only
where they come from a fixed vocabulary; an `upstream_key` value never is (it could be a key).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from phigate.policy.model import (
    DEFAULT_APPROVAL_TIMEOUT,
    HTTP_METHODS,
    MAX_APPROVAL_TIMEOUT,
    OPERATORS,
    SCHEMA,
    Approvals,
    ApprovalRule,
    Condition,
    DirectionMasking,
    Globs,
    Guardrail,
    Limits,
    Masking,
    PhiLimits,
    Policy,
    frozen_map,
)
from phigate.policy.text import TextRule

Path = tuple[str | int, ...]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ENTITY = re.compile(r"^[A-Z][A-Z_]{0,63}$")  # the masking tokens' grammar (<TYPE_1>)
_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_ENDPOINT = re.compile(r"^(\S+) (/\S*)$")

_POLICY_FIELDS = {
    "name": True, "description": False, "groups": True, "priority": True,
    "endpoints": True, "models": True, "masking": True, "tools": False,
    "forbidden_entities": False, "guardrails": False, "phi_limits": False, "limits": False,
    "approvals": False, "upstream_key": False,
}  # field -> required
_NOT_DEFAULTABLE = {"name", "description", "groups", "priority"}
_LIMIT_MINIMUMS = {
    "max_body_bytes": 1, "max_output_tokens": 1, "max_tools": 0, "max_messages": 1,
    "rate_per_minute": 1,
}


def field_name(path: Path) -> str:
    """("policies", 0, "masking") -> "policies[0].masking"."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


class Report:
    """Problems of one file, each as (file, line, field, message); lines are found by path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path, int] = {}
        self.entries: list[tuple[str, int, str, str]] = []
        self.count = 0  # problems raised, duplicates included (a defaults problem hits many)

    def line(self, path: Path) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def add(self, path: Path, message: str) -> None:
        self.add_at(self.line(path), field_name(path), message)

    def add_at(self, line: int, field: str, message: str) -> None:
        self.count += 1
        entry = (self.file, line, field, message)
        if entry not in self.entries:
            self.entries.append(entry)


class _Invalid(Exception):
    """A field could not be read; already reported."""


class _Reader:
    """Typed access to plain values, reporting each problem at its path."""

    def __init__(self, report: Report, entity_types: Collection[str] | None = None) -> None:
        self.report = report
        self.entity_types = entity_types  # the detector's types, when the caller knows them

    def fail(self, path: Path, message: str) -> _Invalid:
        self.report.add(path, message)
        return _Invalid()

    def mapping(self, path: Path, value: Any, fields: dict[str, bool]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping")
        for key in value:
            if key not in fields:
                self.report.add((*path, key), f"unknown field (expected: {', '.join(fields)})")
        for key, required in fields.items():
            if required and key not in value:
                self.report.add((*path, key), "required field is missing")
        return value

    def string(self, path: Path, value: Any, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty string")
        if pattern and not pattern.match(value):
            raise self.fail(path, f"must be {what}")
        return value

    def integer(self, path: Path, value: Any, minimum: int, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, "must be an integer")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self.fail(path, f"must be {bound}")
        return value

    def boolean(self, path: Path, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value

    def strings(
        self, path: Path, value: Any, pattern: re.Pattern[str] | None = None, what: str = "",
        nonempty: bool = False,
    ) -> tuple[str, ...]:
        read_one = lambda where, item: self.string(where, item, pattern, what)  # noqa: E731
        return self.list_of(path, value, read_one, "strings", nonempty)

    def entity(self, path: Path, value: Any) -> str:
        value = self.string(path, value, _ENTITY, "an entity type (upper-case letters and _)")
        if self.entity_types is not None and value not in self.entity_types:
            # A misspelt type would never be found, silently disabling the rule that names it.
            raise self.fail(path, f"unknown entity type {value} (known: {', '.join(sorted(self.entity_types))})")
        return value

    def entities(self, path: Path, value: Any) -> tuple[str, ...]:
        return self.list_of(path, value, self.entity, "entity types")

    def list_of(
        self, path: Path, value: Any, read_one: Callable[[Path, Any], Any], what: str, nonempty: bool = False
    ) -> tuple[Any, ...]:
        if isinstance(value, str) or not isinstance(value, list):
            raise self.fail(path, f"must be a list of {what}")
        if nonempty and not value:
            raise self.fail(path, "must not be empty")
        return tuple(self.each((((*path, index), item) for index, item in enumerate(value)), read_one))

    def each(self, items: Iterable[tuple[Path, Any]], read_one: Callable[[Path, Any], Any]) -> list[Any]:
        """Read every (path, value) item; see `_all`."""
        return self._all(lambda path=path, value=value: read_one(path, value) for path, value in items)

    def gather(self, **readers: Callable[[], Any]) -> dict[str, Any]:
        """Run every named reader; see `_all`."""
        return dict(zip(readers, self._all(readers.values())))

    @staticmethod
    def _all(readers: Iterable[Callable[[], Any]]) -> list[Any]:
        """Run every reader, so that all problems are reported (not only the first), then fail
        if any did."""
        results, failed = [], False
        for reader in readers:
            try:
                results.append(reader())
            except _Invalid:
                failed = True
        if failed:
            raise _Invalid()
        return results

    def choice(self, path: Path, value: Any, options: Iterable[str]) -> str:
        options = tuple(options)
        if value not in options:
            raise self.fail(path, f"must be one of: {', '.join(options)}")
        return value


def build_file(
    data: Any, report: Report, *, source: str, version: str, taken: dict[tuple[str, Any], str],
    entity_types: Collection[str] | None = None,
) -> list[Policy]:
    """The policies of one file. `taken` maps ("name"|"priority", value) -> "file:line" across
    files, so that names and priorities are unique in the whole set. With `entity_types`,
    entity types outside it are problems."""
    read = _Reader(report, entity_types)
    try:
        top = read.mapping((), data, {"schema": True, "defaults": False, "policies": True})
        if "schema" not in top or "policies" not in top:
            raise _Invalid()  # reported as missing
        if top["schema"] != SCHEMA:
            raise read.fail(("schema",), f"must be {SCHEMA}")
        if next(iter(top)) != "schema":
            raise read.fail(("schema",), "must be the first field of the file")
        defaults = read.mapping(
            ("defaults",), top.get("defaults", {}),
            {key: False for key in _POLICY_FIELDS if key not in _NOT_DEFAULTABLE},
        )
        specs = top["policies"]
        if not isinstance(specs, list) or not specs:
            raise read.fail(("policies",), "must be a non-empty list of policies")
    except _Invalid:
        return []
    policies = []
    for index, spec in enumerate(specs):
        before = report.count
        try:
            policy = _policy(read, ("policies", index), spec, defaults, source, version)
        except _Invalid:
            if report.count == before:  # never drop a policy silently
                report.add(("policies", index), "invalid policy")
            continue
        _claim(report, taken, ("policies", index), policy)
        if report.count == before:
            policies.append(policy)
    return policies


def _claim(report: Report, taken: dict, path: Path, policy: Policy) -> None:
    for kind, value in (("name", policy.name), ("priority", policy.priority)):
        where = f"{report.file}:{report.line((*path, kind))}"
        first = taken.setdefault((kind, value), where)
        if first != where:
            report.add((*path, kind), f"{kind} must be unique; also used at {first}")


def _policy(read: _Reader, path: Path, spec: Any, defaults: dict, source: str, version: str) -> Policy:
    spec = read.mapping(path, spec, {key: False for key in _POLICY_FIELDS})
    # Each field comes from the policy, else from the file's `defaults`; its path says which.
    fields: dict[str, tuple[Any, Path]] = {
        key: (value, ("defaults", key)) for key, value in defaults.items() if key not in _NOT_DEFAULTABLE
    }
    fields.update({key: (value, (*path, key)) for key, value in spec.items()})
    for key, required in _POLICY_FIELDS.items():
        if required and key not in fields:
            read.report.add((*path, key), "required field is missing")

    values = read.gather(**{
        key: (lambda key=key, value=value, where=where: _FIELD_READERS[key](read, where, value))
        for key, (value, where) in fields.items() if key in _POLICY_FIELDS
    })
    if any(required and key not in values for key, required in _POLICY_FIELDS.items()):
        raise _Invalid()
    return Policy(**values, source=source, version=version)


def _globs(read: _Reader, path: Path, value: Any, pattern: Callable[[_Reader, Path, Any], str] | None = None) -> Globs:
    spec = read.mapping(path, value, {"allow": True, "deny": False})
    if "allow" not in spec:
        raise _Invalid()  # reported as missing
    read_one = (lambda where, item: pattern(read, where, item)) if pattern else read.string
    return Globs(**read.gather(
        allow=lambda: read.list_of((*path, "allow"), spec["allow"], read_one, "patterns"),
        deny=lambda: read.list_of((*path, "deny"), spec.get("deny", []), read_one, "patterns"),
    ))


def _endpoint(read: _Reader, path: Path, value: Any) -> str:
    pattern = read.string(path, value)
    match = _ENDPOINT.match(pattern)
    if not match or match.group(1) not in HTTP_METHODS:
        raise read.fail(path, 'must be "METHOD /path" (METHOD one of: ' + ", ".join(HTTP_METHODS) + ")")
    return pattern


def _masking(read: _Reader, path: Path, value: Any) -> Masking:
    spec = read.mapping(path, value, {"request": True, "response": True, "reidentify": False})
    return Masking(**read.gather(
        request=lambda: _direction(read, path, spec, "request"),
        response=lambda: _direction(read, path, spec, "response"),
        reidentify=lambda: read.boolean((*path, "reidentify"), spec.get("reidentify", False)),
    ))


def _direction(read: _Reader, path: Path, masking: dict, direction: str) -> DirectionMasking:
    if direction not in masking:
        raise _Invalid()  # already reported as a missing field
    path = (*path, direction)
    spec = read.mapping(path, masking[direction], {"default": True, "entities": False})

    def default() -> str:
        if "default" not in spec:
            raise _Invalid()  # already reported as a missing field
        return read.choice((*path, "default"), spec["default"], OPERATORS)

    return DirectionMasking(**read.gather(
        default=default,
        entities=lambda: _entity_map(read, (*path, "entities"), spec.get("entities", {}),
                                     lambda where, operator: read.choice(where, operator, OPERATORS)),
    ))


def _entity_map(read: _Reader, path: Path, value: Any, check: Callable[[Path, Any], Any]) -> Mapping[str, Any]:
    """A mapping ENTITY_TYPE -> value, each value checked by `check`."""
    if not isinstance(value, dict):
        raise read.fail(path, "must be a mapping of ENTITY_TYPE: value")

    def entry(where: Path, item: tuple[Any, Any]) -> None:
        read.entity(where, item[0])
        check(where, item[1])

    read.each([((*path, key), item) for key, item in zip(value, value.items())], entry)
    return frozen_map(value)


def _text_rule(read: _Reader, path: Path, spec: dict, regex_key: str, keywords_key: str) -> TextRule:
    regexes = spec.get(regex_key, [])

    def regex(where: Path, item: Any) -> str:
        item = read.string(where, item)
        try:
            re.compile(item)
        except re.error as exc:
            raise read.fail(where, f"invalid regular expression: {exc.msg}") from None
        return item

    values = read.gather(
        regexes=lambda: (regex((*path, regex_key), regexes),) if isinstance(regexes, str)
        else read.list_of((*path, regex_key), regexes, regex, "regular expressions"),
        keywords=lambda: read.strings((*path, keywords_key), spec.get(keywords_key, [])),
        decode_base64=lambda: read.boolean((*path, "decode_base64"), spec.get("decode_base64", False)),
    )
    if not values["regexes"] and not values["keywords"]:
        raise read.fail(path, f"needs `{regex_key}` or `{keywords_key}`")
    return TextRule.build(**values)


def _guardrails(read: _Reader, path: Path, value: Any) -> tuple[Guardrail, ...]:
    fields = {"name": True, "regex": False, "keywords": False, "decode_base64": False, "message": False}

    def guardrail(where: Path, item: Any) -> Guardrail:
        spec = read.mapping(where, item, fields)
        return Guardrail(**read.gather(
            name=lambda: _rule_name(read, (*where, "name"), spec.get("name")),
            rule=lambda: _text_rule(read, where, spec, "regex", "keywords"),
            message=lambda: read.string((*where, "message"), spec["message"]) if "message" in spec else None,
        ))

    rules = read.list_of(path, value, guardrail, "rules")
    _unique_names(read, path, rules)
    return rules


def _rule_name(read: _Reader, path: Path, value: Any) -> str:
    return read.string(path, value, _NAME, "lowercase letters, digits, '-', '_' or '.'")


def _unique_names(read: _Reader, path: Path, rules: tuple) -> None:
    seen = set()
    for index, rule in enumerate(rules):
        if rule.name in seen:
            raise read.fail((*path, index, "name"), "rule names must be unique in a policy")
        seen.add(rule.name)


def _phi_limits(read: _Reader, path: Path, value: Any) -> PhiLimits:
    fields = {"max_identifiers": False, "max_per_entity": False, "max_patients": False, "patient_entities": False}
    spec = read.mapping(path, value, fields)
    limits = PhiLimits(**read.gather(
        max_identifiers=lambda: _optional_int(read, path, spec, "max_identifiers", 0),
        max_per_entity=lambda: _entity_map(read, (*path, "max_per_entity"), spec.get("max_per_entity", {}),
                                           lambda where, count: read.integer(where, count, 0)),
        max_patients=lambda: _optional_int(read, path, spec, "max_patients", 0),
        patient_entities=lambda: read.entities((*path, "patient_entities"), spec.get("patient_entities", [])),
    ))
    if limits.max_patients is not None and not limits.patient_entities:
        raise read.fail((*path, "patient_entities"), "required with max_patients (which entity types identify a patient)")
    return limits


def _optional_int(read: _Reader, path: Path, spec: dict, key: str, minimum: int, maximum: int | None = None) -> int | None:
    return read.integer((*path, key), spec[key], minimum, maximum) if key in spec else None


def _limits(read: _Reader, path: Path, value: Any) -> Limits:
    spec = read.mapping(path, value, {key: False for key in _LIMIT_MINIMUMS})
    return Limits(**read.gather(**{
        key: (lambda key=key, low=low: _optional_int(read, path, spec, key, low))
        for key, low in _LIMIT_MINIMUMS.items()
    }))


def _approvals(read: _Reader, path: Path, value: Any) -> Approvals:
    spec = read.mapping(path, value, {"approver_groups": False, "timeout": False, "rules": False})
    timeout = DEFAULT_APPROVAL_TIMEOUT  # the rules' default; a bad value is reported below

    def rules() -> tuple[ApprovalRule, ...]:
        items = spec.get("rules", [])
        if items and not spec.get("approver_groups"):
            read.report.add((*path, "approver_groups"), "required when there are approval rules")
        read_rules = read.list_of((*path, "rules"), items,
                                  lambda where, item: _approval_rule(read, where, item, timeout), "rules")
        _unique_names(read, (*path, "rules"), read_rules)
        return read_rules

    try:
        timeout = _optional_int(read, path, spec, "timeout", 1, MAX_APPROVAL_TIMEOUT) or timeout
    except _Invalid:
        rules()  # report the rules' problems too
        raise
    return Approvals(**read.gather(
        approver_groups=lambda: read.strings((*path, "approver_groups"), spec.get("approver_groups", [])),
        rules=rules,
    ))


_CONDITION_FIELDS = {
    "endpoints": False, "models": False, "max_output_tokens_above": False, "phi_count_above": False,
    "phi_types": False, "tools_declared": False, "prompt_regex": False, "prompt_keywords": False,
    "decode_base64": False, "groups": False,
}


def _approval_rule(read: _Reader, path: Path, value: Any, default_timeout: int) -> ApprovalRule:
    fields = {"name": True, "when": True, "approvals_required": False, "timeout": False}
    spec = read.mapping(path, value, fields)
    return ApprovalRule(**read.gather(
        name=lambda: _rule_name(read, (*path, "name"), spec.get("name")),
        when=lambda: _condition(read, path, spec),
        approvals_required=lambda: read.integer((*path, "approvals_required"), spec.get("approvals_required", 1), 1, 2),
        timeout=lambda: _optional_int(read, path, spec, "timeout", 1, MAX_APPROVAL_TIMEOUT) or default_timeout,
    ))


def _condition(read: _Reader, path: Path, rule: dict) -> Condition:
    """An approval rule's `when`; an empty mapping matches every request."""
    if "when" not in rule:
        raise _Invalid()  # already reported as a missing field
    path = (*path, "when")
    when = read.mapping(path, rule["when"], _CONDITION_FIELDS)

    def prompt() -> TextRule | None:
        if "prompt_regex" in when or "prompt_keywords" in when:
            return _text_rule(read, path, when, "prompt_regex", "prompt_keywords")
        if "decode_base64" in when:
            raise read.fail((*path, "decode_base64"), "only applies with prompt_regex or prompt_keywords")
        return None

    return Condition(**read.gather(
        endpoints=lambda: read.list_of((*path, "endpoints"), when.get("endpoints", []),
                                       lambda where, item: _endpoint(read, where, item), "patterns"),
        models=lambda: read.strings((*path, "models"), when.get("models", [])),
        max_output_tokens_above=lambda: _optional_int(read, path, when, "max_output_tokens_above", 0),
        phi_count_above=lambda: _optional_int(read, path, when, "phi_count_above", 0),
        phi_types=lambda: read.entities((*path, "phi_types"), when.get("phi_types", [])),
        tools_declared=lambda: read.boolean((*path, "tools_declared"), when["tools_declared"]) if "tools_declared" in when else None,
        prompt=prompt,
        groups=lambda: read.strings((*path, "groups"), when.get("groups", [])),
    ))


def _upstream_key(read: _Reader, path: Path, value: Any) -> str:
    # Never echo the value: a pasted key must not reach logs through the error message.
    if not isinstance(value, str) or value.startswith("sk-") or not _KEY_NAME.match(value):
        raise read.fail(path, "must be the NAME of a key configured in the gateway, never a key")
    return value


_FIELD_READERS = {
    "name": lambda read, path, value: read.string(path, value, _NAME, "lowercase letters, digits, '-', '_' or '.'"),
    "description": lambda read, path, value: read.string(path, value),
    "groups": lambda read, path, value: read.strings(path, value, nonempty=True),
    "priority": lambda read, path, value: read.integer(path, value, 0),
    "endpoints": lambda read, path, value: _globs(read, path, value, _endpoint),
    "models": _globs,
    "tools": _globs,
    "masking": _masking,
    "forbidden_entities": lambda read, path, value: read.entities(path, value),
    "guardrails": _guardrails,
    "phi_limits": _phi_limits,
    "limits": _limits,
    "approvals": _approvals,
    "upstream_key": _upstream_key,
}

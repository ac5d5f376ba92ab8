"""Completeness rules per transaction kind: which types make a transaction complete, and when
it expires.

Plain Python with no Flink imports. Real transactions do not all pass through the same
services: a refund skips shipping, a card payment adds a fraud check. A rules file maps a
*kind* (read from a field of the records' values, `--kind-field`, `kind` by default) to its
required types and its own timeout; a transaction without a kind, or of a kind the rules do
not name, follows the default rule, which without a rules file is today's behaviour: every
configured type, `--timeout-s`, `--timeout-mode`.

    version: 2                  # a running job applies the highest version it has seen
    default:                    # optional; every key of a rule is optional
      timeout_s: 120
    kinds:
      refund:
        required: [TypeA, TypeB, TypeC]
        timeout_s: 30
      card:
        required: [TypeA, TypeB, TypeC, TypeD, TypeE]
        timeout_mode: since-last
        max_duration_s: 300

Timeout modes: `since-first` expires a partial `timeout_s` after its first part (event
time); `since-last` after `timeout_s` without a new part (an inactivity gap), but never
later than `max_duration_s` after the first part (0: no cap beyond the gaps; a transaction
has at most one part per type, so its life is bounded by types x timeout anyway).

The same document, as JSON, is what `python -m generator.rules` sends on the reference
topic (key `@rules`) to change the rules of a running job.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

SINCE_FIRST, SINCE_LAST = "since-first", "since-last"
TIMEOUT_MODES = (SINCE_FIRST, SINCE_LAST)
RULES_KEY = "@rules"  # the reference topic's key for rules (no type name starts with @)
_RULE_KEYS = {"required", "timeout_s", "timeout_mode", "max_duration_s"}
_TOP_KEYS = {"version", "default", "kinds"}


class RulesError(ValueError):
    """A rules document that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Rule:
    """What completes a transaction of one kind, and when its partial expires."""

    required: tuple[str, ...]
    timeout_ms: int
    mode: str = SINCE_FIRST
    max_duration_ms: int = 0  # since-last only; 0: no cap

    def is_complete(self, present: Collection[str]) -> bool:
        return set(self.required) <= set(present)

    def deadline(self, first_ms: int, last_ms: int) -> int:
        """Event time at which a partial expires, given its first and latest part."""
        if self.mode == SINCE_FIRST:
            return first_ms + self.timeout_ms
        gap = last_ms + self.timeout_ms
        return min(gap, first_ms + self.max_duration_ms) if self.max_duration_ms else gap


@dataclass(frozen=True)
class RuleSet:
    """The rules in force: a default and one rule per named kind."""

    default: Rule
    kinds: Mapping[str, Rule] = field(default_factory=dict)
    version: int = 0

    def rule(self, kind: str | None) -> Rule:
        return self.kinds.get(kind, self.default) if kind else self.default


def default_rules(types: tuple[str, ...], timeout_s: float, mode: str = SINCE_FIRST,
                  max_duration_s: float = 0.0) -> RuleSet:  # fmt: skip
    """Today's behaviour: every configured type, one timeout."""
    return RuleSet(Rule(tuple(types), _ms(timeout_s), mode, _ms(max_duration_s)))


def parse_rules(document: object, base: RuleSet, types: Collection[str]) -> RuleSet:
    """A rules document (parsed YAML or JSON) over `base`, the job's options.

    Unset keys of a rule come from the default rule, the default's from `base`. Raises
    RulesError naming the place and the problem.
    """
    if not isinstance(document, dict):
        raise RulesError(f"the rules must be a mapping with {sorted(_TOP_KEYS)}")
    _no_unknown(document, _TOP_KEYS, "the rules")
    version = document.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise RulesError(f"version: {version!r} is not a whole number >= 0")
    default = _rule(document.get("default") or {}, base.default, types, "default")
    kinds = document.get("kinds") or {}
    if not isinstance(kinds, dict):
        raise RulesError("kinds: expected a mapping of kind -> rule")
    rules = {}
    for kind, spec in kinds.items():
        if not isinstance(kind, str) or not kind:
            raise RulesError(f"kinds: {kind!r} is not a kind name (a non-empty string)")
        rules[kind] = _rule(spec or {}, default, types, f"kinds.{kind}")
    return RuleSet(default, rules, version)


def _rule(spec: object, base: Rule, types: Collection[str], where: str) -> Rule:
    if not isinstance(spec, dict):
        raise RulesError(f"{where}: expected a mapping with {sorted(_RULE_KEYS)}")
    _no_unknown(spec, _RULE_KEYS, where)
    required = spec.get("required", base.required)
    if (
        not isinstance(required, list | tuple)
        or not required
        or not all(isinstance(t, str) for t in required)
    ):
        raise RulesError(f"{where}.required: expected a non-empty list of types")
    unknown = [t for t in required if t not in types]
    if unknown:
        raise RulesError(f"{where}.required: {unknown} not among the job's types {list(types)}")
    mode = spec.get("timeout_mode", base.mode)
    if mode not in TIMEOUT_MODES:
        raise RulesError(f"{where}.timeout_mode: {mode!r} is not one of {list(TIMEOUT_MODES)}")
    timeout = _seconds(spec, "timeout_s", base.timeout_ms, where, positive=True)
    cap = _seconds(spec, "max_duration_s", base.max_duration_ms, where, positive=False)
    ordered = tuple(t for t in types if t in required)  # the job's order, each once
    return replace(base, required=ordered, timeout_ms=timeout, mode=mode, max_duration_ms=cap)


def _seconds(spec: dict, key: str, base_ms: int, where: str, positive: bool) -> int:
    if key not in spec:
        return base_ms
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RulesError(f"{where}.{key}: {value!r} is not a number of seconds >= 0")
    if positive and value == 0:
        raise RulesError(f"{where}.{key}: must be more than 0")
    return _ms(value)


def _no_unknown(spec: dict, known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in spec if k not in known)
    if unknown:
        raise RulesError(f"{where}: unknown keys {unknown}; known are {sorted(known)}")


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def read_rules(path: Path, base: RuleSet, types: Collection[str]) -> RuleSet:
    """A rules file (YAML, or JSON, which is YAML too)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RulesError(f"{path}: {error}") from None
    try:
        return parse_rules(document, base, types)
    except RulesError as error:
        raise RulesError(f"{path}: {error}") from None


def to_document(rules: RuleSet) -> dict:
    """The rules as a document `parse_rules` reads back exactly (JSON for the topic)."""

    def spec(rule: Rule) -> dict:
        return {
            "required": list(rule.required),
            "timeout_s": rule.timeout_ms / 1000,
            "timeout_mode": rule.mode,
            "max_duration_s": rule.max_duration_ms / 1000,
        }

    return {
        "version": rules.version,
        "default": spec(rules.default),
        "kinds": {kind: spec(rule) for kind, rule in rules.kinds.items()},
    }


def newer(current: RuleSet, base: RuleSet, text: str, types: Collection[str]) -> RuleSet | None:
    """The rules of a reference-topic record (over `base`, the job's options) if their
    version is above the current one, else None. Raises RulesError for a document that
    cannot be used."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise RulesError(f"rules record is not JSON: {error}") from None
    rules = parse_rules(document, base, types)
    return rules if rules.version > current.version else None

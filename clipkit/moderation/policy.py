"""A moderation policy as plain data: named rules, each with what it flags, what it must not flag, a threshold and an action.

    policy = Policy(rules=(
        Rule("weapons", ("a weapon", "a gun", "a knife", "a sword"), counter=("a kitchen tool",), action="block"),
        Rule("alcohol", ("an alcoholic drink", "a glass of beer", "a glass of wine"), action="review"),
    ))
    policy = load_policy("policy.json")        # the same, from a JSON file (policy_to_dict's layout)

A rule's `descriptions` say what it flags (several wordings are averaged: a prompt ensemble); its
`counter` descriptions say what looks alike but must pass ("a water pistol", "a kitchen knife").
`threshold` is the score at or above which the rule fires; calibration (`clipkit.moderation.calibrate`)
sets it from labelled data. Every check names the rule and the field, so a hand-edited policy gets
a message it can be fixed from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clipkit.config import ConfigError
from clipkit.io import atomic_write, read_json

ACTIONS = ("block", "blur", "review", "warn", "log")  # what a platform does with an image a rule flags
# Generic things an image may show: the "nothing to flag" side every rule is scored against, so a
# rule's score says "this rather than ordinary things", whatever other rules the policy holds.
NEUTRAL = ("an object", "a thing", "a symbol", "a face", "a person", "an animal", "a plant", "food", "a building", "a vehicle")
MAX_RULES = 32  # a policy is read by people: past this it is a taxonomy, not a policy
MAX_TEXTS = 16  # descriptions (or counter-descriptions) per rule: each is embedded
MAX_TEXT_CHARS = 200  # one description


@dataclass(frozen=True)
class Rule:
    name: str  # short, unique within the policy; what reports and the app show
    descriptions: tuple[str, ...]  # what the rule flags; several wordings are averaged (a prompt ensemble)
    counter: tuple[str, ...] = ()  # look-alikes the rule must not flag, scored against it beside the neutral set
    action: str = "review"  # one of ACTIONS: what happens to a flagged image
    threshold: float = 0.5  # the rule fires when its score (in [0, 1]) is at least this


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]  # the rules, each scored on its own
    neutral: tuple[str, ...] = NEUTRAL  # ordinary things every rule is scored against (none may be a rule's description)
    templates: tuple[str, ...] = ("{}",)  # each description and neutral text is put into these and averaged, e.g. "a picture of {}"

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "neutral", tuple(self.neutral))
        object.__setattr__(self, "templates", tuple(self.templates))
        check_policy(self)

    @property
    def names(self) -> list[str]:
        return [rule.name for rule in self.rules]

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(f"no rule {name!r} in the policy (rules: {', '.join(self.names)})")

    def with_thresholds(self, thresholds: dict[str, float]) -> Policy:
        """The same policy with these rules' thresholds replaced (e.g. by calibration)."""
        unknown = sorted(set(thresholds) - set(self.names))
        if unknown:
            raise KeyError(f"thresholds for rules the policy does not have: {unknown} (rules: {', '.join(self.names)})")
        rules = tuple(replace(rule, threshold=float(thresholds.get(rule.name, rule.threshold))) for rule in self.rules)
        return replace(self, rules=rules)


def _texts(value: Any, where: str, required: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(text, str) for text in value):
        raise ConfigError(f"{where} must be a list of strings, got {value!r}"[:200])
    texts = tuple(text.strip() for text in value)
    if required and not any(texts):
        raise ConfigError(f"{where} is empty: give at least one text saying what the rule flags, e.g. [\"a weapon\"]")
    if any(not text for text in texts):
        raise ConfigError(f"{where} holds an empty text: remove it or write what it describes")
    if len(texts) > MAX_TEXTS:
        raise ConfigError(f"{where} holds {len(texts)} texts; at most {MAX_TEXTS}")
    long = [text for text in texts if len(text) > MAX_TEXT_CHARS]
    if long:
        raise ConfigError(f"{where} holds a text of {len(long[0])} characters; at most {MAX_TEXT_CHARS}")
    return texts


def check_policy(policy: Policy) -> None:
    """A ConfigError naming the rule and the field if anything is wrong; nothing otherwise."""
    if not policy.rules:
        raise ConfigError("the policy has no rules: add at least one, e.g. {\"name\": \"weapons\", \"descriptions\": [\"a weapon\"]}")
    if len(policy.rules) > MAX_RULES:
        raise ConfigError(f"the policy has {len(policy.rules)} rules; at most {MAX_RULES}")
    _texts(policy.templates, "policy.templates", required=True)
    if any(template.count("{}") != 1 for template in policy.templates):
        raise ConfigError(f"policy.templates must each hold one {{}} where the description goes, got {policy.templates}")
    _texts(policy.neutral, "policy.neutral", required=False)
    seen = set()
    for position, rule in enumerate(policy.rules):
        if not isinstance(rule, Rule):
            raise ConfigError(f"policy.rules[{position}] is a {type(rule).__name__}, not a Rule")
        if not isinstance(rule.name, str) or not rule.name.strip():
            raise ConfigError(f"policy.rules[{position}] has no name: give it a short one, e.g. \"weapons\"")
        where = f"rule {rule.name!r}"
        if rule.name in seen:
            raise ConfigError(f"{where} appears twice: rule names must be unique")
        seen.add(rule.name)
        descriptions = _texts(rule.descriptions, f"{where}: descriptions", required=True)
        counter = _texts(rule.counter, f"{where}: counter", required=False)
        clash = sorted(set(descriptions) & (set(counter) | set(policy.neutral)))
        if clash:
            raise ConfigError(f"{where}: {clash} is both flagged and a counter/neutral text: remove it from one side")
        if rule.action not in ACTIONS:
            raise ConfigError(f"{where}: action {rule.action!r} is not one of {', '.join(ACTIONS)}")
        if isinstance(rule.threshold, bool) or not isinstance(rule.threshold, (int, float)) or not 0 <= rule.threshold <= 1:
            raise ConfigError(f"{where}: threshold {rule.threshold!r} is outside [0, 1]: scores are in [0, 1], so pick e.g. 0.5")


_RULE_FIELDS = ("name", "descriptions", "counter", "action", "threshold")
_POLICY_FIELDS = ("rules", "neutral", "templates")


def _unknown(data: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {where} field(s) {unknown} (known fields: {', '.join(known)})")


def policy_from_dict(data: Any) -> Policy:
    """A checked Policy from plain data (policy_to_dict's layout); a ConfigError names what is wrong."""
    if not isinstance(data, dict):
        raise ConfigError(f"a policy must be a JSON object with a \"rules\" list, got {type(data).__name__}")
    _unknown(data, _POLICY_FIELDS, "policy")
    entries = data.get("rules")
    if not isinstance(entries, list):
        raise ConfigError("the policy has no \"rules\" list: add at least one rule, e.g. {\"name\": \"weapons\", \"descriptions\": [\"a weapon\"]}")
    rules = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"policy.rules[{position}] must be an object with name and descriptions, got {entry!r}"[:200])
        name = entry.get("name", "")
        where = f"rule {name!r}" if name else f"policy.rules[{position}]"
        _unknown(entry, _RULE_FIELDS, where)
        if "descriptions" not in entry:
            raise ConfigError(f"{where} has no descriptions: say what it flags, e.g. \"descriptions\": [\"a weapon\"]")
        rules.append(Rule(
            name=name if isinstance(name, str) else str(name),
            descriptions=_texts(entry["descriptions"], f"{where}: descriptions", required=True),
            counter=_texts(entry.get("counter", ()), f"{where}: counter", required=False),
            action=entry.get("action", "review"),
            threshold=entry.get("threshold", 0.5),
        ))
    extra = {key: _texts(data[key], f"policy.{key}", required=key == "templates") for key in ("neutral", "templates") if key in data}
    return Policy(rules=tuple(rules), **extra)


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """Plain JSON-ready data that policy_from_dict reads back."""
    return {
        "rules": [{"name": r.name, "descriptions": list(r.descriptions), "counter": list(r.counter),
                   "action": r.action, "threshold": float(r.threshold)} for r in policy.rules],
        "neutral": list(policy.neutral),
        "templates": list(policy.templates),
    }


def policy_from_json(text: str) -> Policy:
    """A Policy from JSON text (what the app's policy box holds); bad JSON is a ConfigError saying where."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"the policy is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    return policy_from_dict(data)


def policy_to_json(policy: Policy) -> str:
    return json.dumps(policy_to_dict(policy), indent=2)


def load_policy(path: str | Path) -> Policy:
    """A Policy from a JSON file: a damaged file is a BadFileError, a bad field a ConfigError naming the rule."""
    return policy_from_dict(read_json(path, "moderation policy", "Write it as policy_to_json does: {\"rules\": [...]}."))


def save_policy(policy: Policy, path: str | Path) -> Path:
    path = Path(path)
    text = policy_to_json(policy)
    atomic_write(path, lambda temporary: temporary.write_text(text))
    return path

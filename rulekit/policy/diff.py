"""What changed between two policies: identity, params (effective values), rules and formulas,
markets. A content change without a raised version is called out: the audit log tells decisions
apart by version."""
from __future__ import annotations

from typing import Any

from rulekit.policy.loader import Policy

SECTIONS = ("derived", "gates", "limits", "sizing", "exits")
LABELS = {"gates": "gate", "limits": "limit", "exits": "exit"}


def diff_policies(old: Policy, new: Policy) -> dict[str, Any]:
    def identity(p: Policy) -> dict[str, Any]:
        return {"name": p.name, "version": p.version, "hash": p.hash, "path": p.path}

    changes: list[dict[str, Any]] = []
    for name in sorted(set(old.params) | set(new.params)):
        before, after = old.params.get(name), new.params.get(name)
        if before is None or after is None or before.value != after.value:
            changes.append({"kind": "param", "name": name,
                            "old": None if before is None else _plain(before.value),
                            "new": None if after is None else _plain(after.value)})
    rules_before, rules_after = _rules(old), _rules(new)
    for key in sorted(set(rules_before) | set(rules_after), key=lambda k: (SECTIONS.index(k[0]),
                                                                          k[1])):
        before, after = rules_before.get(key), rules_after.get(key)
        if before != after:
            changes.append({"kind": key[0], "name": key[1], "old": before, "new": after})
    for symbol in sorted(set(old.markets) | set(new.markets)):
        before, after = old.markets.get(symbol), new.markets.get(symbol)
        if before != after:
            changes.append({"kind": "market", "name": symbol,
                            "old": None if before is None else _market(before),
                            "new": None if after is None else _market(after)})
    same_version = old.version == new.version and old.name == new.name
    return {"old": identity(old), "new": identity(new), "changes": changes,
            "version_not_raised": bool(same_version and old.hash != new.hash)}


def render(diff: dict[str, Any]) -> str:
    old, new = diff["old"], diff["new"]
    lines = [f"{old['name']} v{old['version']} (sha256 {old['hash'][:12]}) -> "
             f"{new['name']} v{new['version']} (sha256 {new['hash'][:12]})"]
    if not diff["changes"]:
        lines.append("no change in params, rules, formulas or markets")
    for change in diff["changes"]:
        label = f"{LABELS.get(change['kind'], change['kind'])} {change['name']}"
        if change["old"] is None:
            lines.append(f"+ {label}: {change['new']}")
        elif change["new"] is None:
            lines.append(f"- {label}: {change['old']}")
        else:
            lines.append(f"~ {label}: {change['old']} -> {change['new']}")
    if diff["version_not_raised"]:
        lines.append("warning: the content changed but the version was not raised")
    return "\n".join(lines)


def _rules(policy: Policy) -> dict[tuple[str, str], str]:
    return {(step.section, step.name): step.expression.text for step in policy.steps
            if not step.builtin and step.section in SECTIONS}


def _market(rules) -> dict[str, Any]:
    return {"amount_step": rules.amount_step, "min_notional": rules.min_notional,
            "min_amount": rules.min_amount}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

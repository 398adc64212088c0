"""Load a policy file: schema, semantic checks, environment overrides, content hash.

Everything that can be wrong with a policy is found here, at load, and reported together with
``file:line:column``; a Policy that exists is one the engine can run.
"""
from __future__ import annotations

import hashlib
import json
import keyword
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from rulekit.errors import PolicyError, RulekitError
from rulekit.model import MarketRules
from rulekit.policy import vocabulary
from rulekit.policy.expressions import FUNCTIONS, Expression, ExpressionError, Type, check
from rulekit.policy.yaml_source import YamlDocument, load_yaml

PARAM_TYPES = {"float": Type.NUMBER, "int": Type.NUMBER, "bool": Type.BOOL, "str": Type.TEXT,
               "list": Type.TEXT_LIST}
ENV_PREFIX = "RM_"
SECTIONS = ("derived", "gates", "limits", "sizing", "exits")
BUILTIN_FUNCTIONS = {**FUNCTIONS, "floor_to_step": (3, 3)}


@dataclass(frozen=True)
class Param:
    """A tunable: its effective value and where that value came from (the file or RM_<NAME>)."""

    name: str
    type: str
    value: Any
    default: Any
    minimum: float | None
    maximum: float | None
    description: str
    source: str


@dataclass(frozen=True)
class Step:
    """One rule or formula of the compiled program, in evaluation order.

    A check (``is_check``) passes when its expression is true; its ``name`` is the rejection reason.
    """

    section: str
    name: str
    expression: Expression
    is_check: bool
    builtin: bool


@dataclass(frozen=True)
class Policy:
    name: str
    version: int
    description: str
    path: str
    params: Mapping[str, Param]
    steps: tuple[Step, ...]
    markets: Mapping[str, MarketRules]
    hash: str

    def constants(self) -> dict[str, Any]:
        """Every name whose value is fixed at load: params, built-in constants, known symbols."""
        values: dict[str, Any] = dict(vocabulary.DEFAULT_PARAMS)
        values.update(vocabulary.CONSTANTS)
        values.update({name: param.value for name, param in self.params.items()})
        values["known_symbols"] = tuple(sorted(self.markets))
        return values


def schema() -> dict[str, Any]:
    return json.loads(resources.files("rulekit.policy").joinpath("schema.json").read_text())


def load_policy(path: str | Path, environ: Mapping[str, str] | None = None) -> Policy:
    """Read, check and compile-check a policy; raise PolicyError listing every problem found."""
    document = load_yaml(path)
    problems = _schema_problems(document)
    if problems:
        raise PolicyError(problems)
    environ = os.environ if environ is None else environ
    data = document.data
    params = _params(document, environ, problems)
    markets = _markets(data["markets"])
    steps = _steps(document, params, markets, problems)
    if problems:
        raise PolicyError(problems)
    policy_hash = _content_hash(data, params)
    return Policy(name=data["policy"], version=data["version"],
                  description=" ".join(str(data.get("description", "")).split()),
                  path=str(path), params=params, steps=steps, markets=markets, hash=policy_hash)


def _schema_problems(document: YamlDocument) -> list[RulekitError]:
    validator = jsonschema.Draft202012Validator(schema())
    problems = []
    for error in sorted(validator.iter_errors(document.data), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        problems.append(document.error(tuple(error.absolute_path), f"{where}: {error.message}"))
    return problems


def _params(document: YamlDocument, environ: Mapping[str, str],
            problems: list[RulekitError]) -> dict[str, Param]:
    params: dict[str, Param] = {}
    declared = document.data["params"]
    for name, spec in declared.items():
        where = ("params", name)
        if keyword.iskeyword(name) or name in vocabulary.INPUTS or name in vocabulary.CONSTANTS:
            problems.append(document.error(where, f"param '{name}' is a reserved name"))
            continue
        kind = spec["type"]
        try:
            default = _coerce(kind, spec["default"])
        except ValueError as exc:
            problems.append(document.error(where + ("default",), f"param '{name}': {exc}"))
            continue
        value, source = default, f"{document.path}"
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            try:
                value, source = _coerce(kind, environ[env_name], from_text=True), env_name
            except ValueError as exc:
                problems.append(document.error(where, f"{env_name}={environ[env_name]!r}: {exc}"))
                continue
        for bound, label, outside in (("min", "below its min", lambda v, b: v < b),
                                      ("max", "above its max", lambda v, b: v > b)):
            if bound in spec and kind in ("float", "int") and outside(value, spec[bound]):
                origin = env_name if source == env_name else "default"
                problems.append(document.error(where, f"param '{name}': {origin} {value} is {label} "
                                                      f"{spec[bound]}"))
        choices = vocabulary.PARAM_CHOICES.get(name)
        if choices and value not in choices:
            problems.append(document.error(where, f"param '{name}': {value!r} is not one of "
                                                  f"{', '.join(choices)}"))
        params[name] = Param(name, kind, value, default, spec.get("min"), spec.get("max"),
                             " ".join(str(spec.get("description", "")).split()), source)
    known = {ENV_PREFIX + name.upper() for name in declared}
    for env_name in sorted(environ):
        if env_name.startswith(ENV_PREFIX) and env_name not in known:
            problems.append(document.error(("params",), f"{env_name} is set but the policy has no "
                                                       f"param '{env_name[3:].lower()}'"))
    return params


def _coerce(kind: str, value: Any, from_text: bool = False) -> Any:
    """The value as the param's type; text from the environment is parsed, never guessed."""
    if from_text:
        text = value.strip()
        if kind == "list":
            items = [item.strip() for item in text.split(",")]
            if not all(items):
                raise ValueError("expected a comma-separated list such as UNANIMOUS,STRONG")
            return tuple(items)
        if kind == "bool":
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        if kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError("expected a whole number") from None
        if kind == "float":
            try:
                number = float(text)
            except ValueError:
                raise ValueError("expected a number") from None
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        return text
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return float(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"default {value!r} is not a {kind}")


def _markets(spec: Mapping[str, Mapping[str, float]]) -> dict[str, MarketRules]:
    return {symbol: MarketRules(amount_step=float(rules["amount_step"]),
                                min_notional=float(rules.get("min_notional", 0.0)),
                                min_amount=float(rules.get("min_amount", 0.0)),
                                price_tick=rules.get("price_tick"))
            for symbol, rules in spec.items()}


def _steps(document: YamlDocument, params: Mapping[str, Param],
           markets: Mapping[str, MarketRules], problems: list[RulekitError]) -> tuple[Step, ...]:
    names: dict[str, Type] = {name: kind for name, (kind, _) in vocabulary.INPUTS.items()}
    names.update({name: Type.TEXT_LIST if isinstance(v, tuple) else Type.NUMBER
                  for name, v in vocabulary.CONSTANTS.items()})
    names["known_symbols"] = Type.TEXT_LIST
    names.update({name: PARAM_TYPES[p.type] for name, p in params.items()})
    for name in vocabulary.DEFAULT_PARAMS:
        names.setdefault(name, Type.NUMBER)
    steps: list[Step] = []

    def builtin(section: str, formulas: Mapping[str, str], is_check: bool) -> None:
        for name, text in formulas.items():
            expression = check(text, names, BUILTIN_FUNCTIONS)
            if not is_check:
                names[name] = expression.type
            steps.append(Step(section, name, expression, is_check, builtin=True))

    builtin("account", vocabulary.DERIVED, is_check=False)
    builtin("inputs", vocabulary.INPUT_CHECKS, is_check=True)
    rule_ids = set(vocabulary.INPUT_CHECKS) | set(vocabulary.OUTPUT_CHECKS)
    data = document.data
    for section in SECTIONS:
        content = data.get(section) or {}
        is_check = section in ("gates", "limits")
        entries = ([(i, rule["id"], rule["rule"]) for i, rule in enumerate(content)] if is_check
                   else [(name, name, text) for name, text in content.items()])
        for key, name, text in entries:
            where = (section, key, "rule") if is_check else (section, key)
            label = f"{section[:-1] if is_check else section} '{name}'"
            if is_check:
                if name in rule_ids:
                    problems.append(document.error((section, key, "id"), f"duplicate rule id '{name}'"))
                    continue
                rule_ids.add(name)
            elif name in names or keyword.iskeyword(name):
                what = "a param" if name in params else "already defined"
                problems.append(document.error(where, f"{label}: the name '{name}' is {what}"))
                continue
            try:
                expression = check(str(text), names)
            except ExpressionError as exc:
                problems.append(document.error(where, f"{label}: {exc}"))
                if not is_check:
                    names[name] = Type.NUMBER  # keep checking later formulas against it
                continue
            expected = Type.BOOL if is_check else (Type.NUMBER if section in ("sizing", "exits")
                                                   else None)
            if expected and expression.type is not expected:
                problems.append(document.error(where, f"{label}: must be a {expected.value}, "
                                                      f"not a {expression.type.value}"))
            if expression.type is Type.TEXT_LIST:
                problems.append(document.error(where, f"{label}: a list cannot be a formula"))
            if not is_check:
                names[name] = expression.type
            steps.append(Step(section, name, expression, is_check, builtin=False))
    for section, required in (("sizing", vocabulary.REQUIRED_SIZING),
                              ("exits", vocabulary.REQUIRED_EXITS)):
        missing = [name for name in required if name not in names]
        if missing:
            where = (section,) if section in data else ()
            problems.append(document.error(where, f"{section}: missing formula(s) "
                                                  f"{', '.join(missing)}"))
    if problems:
        return tuple(steps)
    builtin("outputs", vocabulary.OUTPUTS, is_check=False)
    builtin("size", vocabulary.OUTPUT_CHECKS, is_check=True)
    return tuple(steps)


def _content_hash(data: Mapping[str, Any], params: Mapping[str, Param]) -> str:
    """sha256 of what the policy does: effective params, rules, formulas and markets.

    Comments, descriptions and formatting do not change it; an RM_ override does.
    """
    canonical = {
        "policy": data["policy"],
        "version": data["version"],
        "params": {name: [p.type, list(p.value) if isinstance(p.value, tuple) else p.value]
                   for name, p in sorted(params.items())},
        "derived": {k: " ".join(str(v).split()) for k, v in (data.get("derived") or {}).items()},
        "gates": [[r["id"], " ".join(r["rule"].split())] for r in data["gates"]],
        "limits": [[r["id"], " ".join(r["rule"].split())] for r in data["limits"]],
        "sizing": {k: " ".join(str(v).split()) for k, v in data["sizing"].items()},
        "exits": {k: " ".join(str(v).split()) for k, v in data["exits"].items()},
        "markets": data["markets"],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()

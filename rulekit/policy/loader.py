"""Load a policy file: schema, semantic checks, environment overrides, content hash.

Everything that can be wrong with a policy is found here, at load, and reported together with
``file:line:column``; a Policy that exists is one the engine can run.
"""
from __future__ import annotations

import functools
import hashlib
import json
import keyword
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from rulekit.errors import PolicyError, RulekitError
from rulekit.model import MarketRules, normalise_symbol
from rulekit.policy import expressions, vocabulary
from rulekit.policy.expressions import (
    FUNCTIONS,
    Expression,
    ExpressionError,
    Type,
    check,
    closest,
    did_you_mean,
)
from rulekit.policy.yaml_source import PathKey, YamlDocument, load_yaml, parse_yaml

PARAM_TYPES = {"float": Type.NUMBER, "int": Type.NUMBER, "bool": Type.BOOL, "str": Type.TEXT,
               "list": Type.TEXT_LIST}
ENV_PREFIX = "RM_"
SECTIONS = ("derived", "gates", "limits", "sizing", "exits")
BUILTIN_FUNCTIONS = {**FUNCTIONS, "floor_to_step": (3, 3)}


SCHEMA_DEFAULT = "schema default"


@dataclass(frozen=True)
class Param:
    """A tunable: its effective value and where that value came from: ``file:line``, the schema's
    default (``SCHEMA_DEFAULT``) or ``RM_<NAME>``. A value of None is "off" (only for the engine
    params whose schema allows it): to the engine a limit that is never reached, +infinity.
    """

    name: str
    type: str
    value: Any
    default: Any
    minimum: float | None
    maximum: float | None
    description: str
    source: str

    @property
    def engine_value(self) -> Any:
        return math.inf if self.value is None else self.value

    @property
    def overridden(self) -> bool:
        return self.source.startswith(ENV_PREFIX)

    @staticmethod
    def show(value: Any) -> str:
        """A value as a policy spells it: ``off``, ``[UNANIMOUS, STRONG]``, ``0.5``."""
        if value is None:
            return "off"
        if isinstance(value, tuple):
            return "[" + ", ".join(value) + "]"
        return str(value).lower() if isinstance(value, bool) else str(value)


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
        values: dict[str, Any] = dict(vocabulary.CONSTANTS)
        values.update({name: param.engine_value for name, param in self.params.items()})
        values["known_symbols"] = tuple(sorted(self.markets))
        return values


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("rulekit.policy").joinpath("schema.json").read_text())


def engine_params() -> dict[str, dict[str, Any]]:
    """The params the engine reads outside the policy's expressions, as the schema states them:
    each has either a ``default`` (the param spec used when a policy leaves it out) or is required,
    and ``x-value`` (the JSON Schema its effective value must meet)."""
    return schema()["properties"]["params"]["properties"]


def load_policy(path: str | Path, environ: Mapping[str, str] | None = None) -> Policy:
    """Read, check and compile-check a policy; raise PolicyError listing every problem found."""
    document = load_yaml(path)
    problems = _schema_problems(document)
    if problems:
        raise PolicyError(problems)
    environ = os.environ if environ is None else environ
    data = document.data
    params = _params(document, environ, problems)
    markets = _markets(document, problems)
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
        for message in _schema_messages(error):
            if any(p.message.endswith(message) for p in problems):
                continue  # jsonschema repeats "required" once per missing key
            problems.append(document.error(tuple(error.absolute_path), f"{where}: {message}"))
    return problems


def _schema_messages(error: jsonschema.ValidationError) -> list[str]:
    """jsonschema's message, in the policy's words where it names missing or unknown keys."""
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        engine = engine_params() if list(error.absolute_path) == ["params"] else {}
        messages = []
        for name in missing:
            text = (f"missing param '{name}', which the engine reads and which has no default "
                    f"({engine[name]['description'].split('. ')[0]})" if name in engine
                    else f"missing '{name}'")
            typo = closest(name, set(instance) - set(engine), cutoff=0.85)
            messages.append(text + (f"; is '{typo}' a misspelling of it?" if typo else ""))
        return messages
    if error.validator == "additionalProperties":
        known = set(error.schema.get("properties", {}))
        unknown = [name for name in instance if name not in known]
        if known and unknown:
            return [f"unknown key '{name}'{did_you_mean(name, known)}" for name in unknown]
    return [error.message]


def _params(document: YamlDocument, environ: Mapping[str, str],
            problems: list[RulekitError]) -> dict[str, Param]:
    """The effective params: the file's, then the schema's defaults for engine params the file
    leaves out, then RM_ overrides; each checked against its bounds and the engine's ``x-value``."""
    declared = document.data["params"]
    engine = engine_params()
    specs: list[tuple[str, Mapping[str, Any], str]] = []
    for name, spec in declared.items():
        line, _ = document.position(("params", name, "default"))
        specs.append((name, spec, f"{document.path}:{line}"))
    specs += [(name, entry["default"], SCHEMA_DEFAULT) for name, entry in sorted(engine.items())
              if name not in declared and "default" in entry]
    params: dict[str, Param] = {}
    for name, spec, origin in specs:
        where = ("params", name) if name in declared else ("params",)
        if keyword.iskeyword(name) or name in vocabulary.INPUTS or name in vocabulary.CONSTANTS:
            problems.append(document.error(where, f"param '{name}' is a reserved name"))
            continue
        kind = spec["type"]
        off = name in engine and jsonschema.Draft202012Validator(
            engine[name]["x-value"]).is_valid(None)
        try:
            default = _coerce(kind, spec["default"], off=off)
        except ValueError as exc:
            problems.append(document.error(where + ("default",), f"param '{name}': {exc}"))
            params[name] = Param(name, kind, None, None, None, None, "", origin)  # for the checks
            continue
        value, source = default, origin
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            try:
                value = _coerce(kind, environ[env_name], from_text=True, off=off)
                source = env_name
            except ValueError as exc:
                problems.append(document.error(where, f"{env_name}={environ[env_name]!r}: {exc}"))
        label = f"param '{name}': {env_name if source == env_name else 'default'} {value}"
        at = where + ("default",) if source == origin and name in declared else where
        for bound, text, outside in (("min", "below its min", lambda v, b: v < b),
                                     ("max", "above its max", lambda v, b: v > b)):
            if (bound in spec and kind in ("float", "int") and value is not None
                    and outside(value, spec[bound])):
                problems.append(document.error(at, f"{label} is {text} {spec[bound]}"))
        if name in engine:
            problem = _engine_value_problem(engine[name], value)
            if problem:
                problems.append(document.error(at, f"{label}: {problem}"))
        params[name] = Param(name, kind, value, default, spec.get("min"), spec.get("max"),
                             " ".join(str(spec.get("description", "")).split()), source)
    known = {ENV_PREFIX + name.upper() for name, _, _ in specs}
    for env_name in sorted(environ):
        if env_name.startswith(ENV_PREFIX) and env_name not in known:
            typo = closest(env_name, known)
            hint = f" (did you mean {typo}?)" if typo else ""
            problems.append(document.error(("params",), f"{env_name} is set but the policy has no "
                                                       f"param '{env_name[3:].lower()}'{hint}"))
    return params


def _engine_value_problem(entry: Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with an engine param's effective value, by the schema's ``x-value``."""
    plain = list(value) if isinstance(value, tuple) else value
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(entry["x-value"]).iter_errors(plain))
    if error is None:
        return None
    return entry.get("x-hint") or error.message


def _coerce(kind: str, value: Any, from_text: bool = False, off: bool = False) -> Any:
    """The value as the param's type; text from the environment is parsed, never guessed.

    ``off`` (or null) is None, for a param that can be switched off; never 0, never false.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "off"):
        if off:
            return None
        raise ValueError(f"{'off' if value else 'null'} is not a value of this param (it cannot "
                         "be switched off)")
    if from_text:
        text = value.strip()
        if kind == "list":
            return _text_list(text)
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


def _reads_any(text: str, names: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(name)}\b", text) for name in names)


def _word_problems(document: YamlDocument, param: Param, enumerated: str,
                   words: tuple[str, ...]) -> list[RulekitError]:
    """A param compared with an enumerated input must hold its words (checked where it is set)."""
    if param.value is None:
        return []
    values = param.value if isinstance(param.value, tuple) else (param.value,)
    origin = param.source if param.overridden else "default"
    where: PathKey = ("params", param.name) + (() if param.overridden else ("default",))
    return [document.error(where, f"param '{param.name}': {origin}: {problem}")
            for value in values
            if (problem := expressions.vocabulary_problem(value, enumerated, words))]


def _text_list(text: str) -> tuple[str, ...]:
    """A list from the environment: a YAML/JSON flow list ``[UNANIMOUS, STRONG]`` or a comma list
    ``UNANIMOUS,STRONG``."""
    example = "a list such as [UNANIMOUS, STRONG] or UNANIMOUS,STRONG"
    if text.startswith("["):
        try:
            items = parse_yaml(text, "the value").data
        except PolicyError:
            raise ValueError(f"not a valid list: expected {example}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise ValueError(f"expected {example}, each item a word")
        return tuple(items)
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"expected {example}")
    return tuple(items)


def _markets(document: YamlDocument, problems: list[RulekitError]) -> dict[str, MarketRules]:
    """The markets under the one spelling signals and candle files are read in (``BTC/USDT`` is
    ``BTCUSDT``), so a market written as the exchange writes it is still found; two spellings of
    one market are refused, since only one of their rules could apply."""
    markets: dict[str, MarketRules] = {}
    spelt: dict[str, str] = {}
    for written, rules in document.data["markets"].items():
        symbol = normalise_symbol(written) or str(written)
        if symbol in spelt:
            problems.append(document.error(("markets", written), (
                f"market '{written}' is '{spelt[symbol]}' again (both are {symbol}); "
                "keep one")))
            continue
        spelt[symbol] = str(written)
        markets[symbol] = MarketRules(amount_step=float(rules["amount_step"]),
                                      min_notional=float(rules.get("min_notional", 0.0)),
                                      min_amount=float(rules.get("min_amount", 0.0)),
                                      price_tick=rules.get("price_tick"))
    return markets


def _steps(document: YamlDocument, params: Mapping[str, Param],
           markets: Mapping[str, MarketRules], problems: list[RulekitError]) -> tuple[Step, ...]:
    names: dict[str, Type] = {name: kind for name, (kind, _) in vocabulary.INPUTS.items()}
    names.update({name: Type.TEXT_LIST if isinstance(v, tuple) else Type.NUMBER
                  for name, v in vocabulary.CONSTANTS.items()})
    names["known_symbols"] = Type.TEXT_LIST
    names.update({name: PARAM_TYPES[p.type] for name, p in params.items()})
    vocabularies = {**vocabulary.ENUMERATED, "symbol": tuple(markets)}
    checked_words: set[str] = set()
    broken: set[str] = set()  # formulas that failed: a rule reading one is not reported again
    steps: list[Step] = []

    def builtin(section: str, formulas: Mapping[str, str], is_check: bool) -> None:
        for name, text in formulas.items():
            expression = check(text, names, BUILTIN_FUNCTIONS)
            if not is_check:
                names[name] = expression.type
            steps.append(Step(section, name, expression, is_check, builtin=True))

    builtin("account", vocabulary.DERIVED, is_check=False)
    inputs_at = len(steps)  # the input checks go here, once it is known what the policy reads
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
                expression = check(str(text), names, vocabularies=vocabularies)
            except ExpressionError as exc:
                if not _reads_any(str(text), broken):  # else the cause is reported already
                    problems.append(document.error(where, f"{label}: {exc}"))
                if not is_check:
                    names[name] = Type.NUMBER  # keep checking later formulas against it
                    broken.add(name)
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
            for used, enumerated in sorted(expression.enumerated_uses):
                if used in params and used not in checked_words:
                    checked_words.add(used)
                    problems.extend(_word_problems(document, params[used], enumerated,
                                                   vocabularies[enumerated]))
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
    policy_steps = steps[inputs_at:]
    steps[inputs_at:] = []
    builtin("inputs", vocabulary.input_checks(_inputs_read(steps + policy_steps)), is_check=True)
    steps.extend(policy_steps)
    return tuple(steps)


def _inputs_read(steps: list[Step]) -> frozenset[str]:
    """The raw inputs a decision depends on: read by a check or by the engine's own figures (size,
    exit levels), directly or through formulas (the input checks then ask only for those)."""
    formulas = {step.name: step.expression.names for step in steps if not step.is_check}
    roots = [step for step in steps  # the checks and the engine's own figures (the size, levels)
             if step.is_check or (step.builtin and step.section != "account")]
    pending = [name for step in roots for name in step.expression.names]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(formulas.get(name, ()))
    return frozenset(seen & set(vocabulary.INPUTS))


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

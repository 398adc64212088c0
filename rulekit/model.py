"""The values that flow through a decision: signal, market conditions, account, market rules, decision.

Fields of a signal may be missing or malformed on purpose: parsing never raises, it records NaN or
None, and the engine's input checks turn that into a named rejection (fail closed).
"""
from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

from rulekit.errors import StateError

NAN = float("nan")


class Side(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"


class Consensus(StrEnum):
    """How the ensemble's models agreed: all of them, a clear majority, a thin one, or a tie."""

    UNANIMOUS = "UNANIMOUS"
    STRONG = "STRONG"
    WEAK = "WEAK"
    SPLIT = "SPLIT"


def as_number(value: Any) -> float:
    """A float, or NaN for anything that is not a finite-able number (None, '', 'abc', True)."""
    if isinstance(value, bool) or value is None:
        return NAN
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return NAN
    return NAN


def as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    return None


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 (a trailing Z allowed) or epoch seconds/milliseconds; naive times are UTC."""
    if value.__class__ is str:  # the usual case first: ISO text
        text = value.strip()
        if not text.replace(".", "", 1).isdigit():
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except (ValueError, OverflowError, OSError):
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            seconds = value / 1000.0 if value > 1e11 else float(value)
            return datetime.fromtimestamp(seconds, tz=UTC)
        text = str(value).strip()
        if text.replace(".", "", 1).isdigit():
            return parse_timestamp(float(text))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_timestamp(moment: datetime | float | None) -> str | None:
    """ISO 8601 UTC with a Z, from a datetime or epoch seconds; None stays None."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(float(moment), UTC)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Signal:
    """What the bot's ensemble wants to do, and the market snapshot it saw when it decided."""

    symbol: str | None
    side: str | None
    consensus: str | None
    confidence: float
    price: float = NAN
    atr: float = NAN
    ema_200: float = NAN
    volume_24h: float = NAN
    spread_bps: float = NAN
    history_bars: float = NAN
    signal_id: str | None = None
    timestamp: datetime | None = None
    market_timestamp: datetime | None = None
    strength: float = NAN
    model_votes: Any = None
    equity: float = NAN
    well_formed: bool = True
    raw: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def malformed(cls, raw: Any) -> Signal:
        """A line that is not a record at all: kept (for the audit) and rejected as malformed."""
        return cls(symbol=None, side=None, consensus=None, confidence=NAN, well_formed=False,
                   raw=raw)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Signal:
        """Build from one JSON/CSV record without ever raising: bad fields become NaN/None.

        A record that cannot be read as meant is not well formed (rejected as
        ``malformed_signal``, see ``record_problems``): a field rulekit does not know (a typo
        would otherwise leave the default in force) or a timestamp it cannot read (it would
        otherwise be decided as "now", or its market data as fresh). The same reading as
        ``record_problems``, each timestamp parsed once and the words of a stream's few symbols,
        sides and consensus types looked up rather than normalised again."""
        get = record.get
        given, seen = get("timestamp"), get("market_timestamp")
        timestamp, market_timestamp = parse_timestamp(given), parse_timestamp(seen)
        well_formed = (record.keys() <= RECORD_FIELD_SET
                       and (timestamp is not None or given in (None, ""))
                       and (market_timestamp is not None or seen in (None, "")))
        signal_id = get("signal_id")
        return cls(
            _symbol(get("symbol")), _word(get("side")), _word(get("consensus")),
            _number(get("confidence")), _number(get("price")), _number(get("atr")),
            _number(get("ema_200")), _number(get("volume_24h")), _number(get("spread_bps")), NAN,
            None if signal_id in (None, "") else str(signal_id), timestamp, market_timestamp,
            _number(get("strength")), get("model_votes"), _number(get("equity")), well_formed,
            record)


def _number(value: Any) -> float:
    return value if value.__class__ is float else as_number(value)


WORDS: dict[str, str | None] = {}  # text as read -> the word (stripped, upper case)
SYMBOLS: dict[str, str | None] = {}  # text as read -> normalise_symbol's spelling
KEPT_WORDS = 4096  # past this many spellings a cache starts again (a stream has a few)


def _word(value: Any) -> str | None:
    """``as_text(value).upper()``, or None."""
    if value.__class__ is not str:
        text = as_text(value)
        return text.upper() if text else None
    found = WORDS.get(value, WORDS)
    if found is WORDS:
        text = value.strip()
        found = text.upper() if text else None
        if len(WORDS) >= KEPT_WORDS:
            WORDS.clear()
        WORDS[value] = found
    return found  # type: ignore[return-value]


def _symbol(value: Any) -> str | None:
    """``normalise_symbol(value)``, looked up for text seen before."""
    if value.__class__ is not str:
        return normalise_symbol(value)
    found = SYMBOLS.get(value, SYMBOLS)
    if found is SYMBOLS:
        found = normalise_symbol(value)
        if len(SYMBOLS) >= KEPT_WORDS:
            SYMBOLS.clear()
        SYMBOLS[value] = found
    return found  # type: ignore[return-value]


def slot_init(cls: type) -> type:
    """Give a frozen slots dataclass an ``__init__`` that stores each field through its slot
    (the member descriptor) instead of ``object.__setattr__`` by name: the same signature and
    defaults, the same values, about 2.5x faster to build (a ``Signal`` per line, per copy)."""
    original = vars(cls)["__init__"]
    parameters = list(inspect.signature(original).parameters.values())[1:]
    namespace: dict[str, Any] = {}
    arguments, body = [], []
    for index, parameter in enumerate(parameters):
        namespace[f"_set{index}"] = getattr(cls, parameter.name).__set__
        if parameter.default is inspect.Parameter.empty:
            arguments.append(parameter.name)
        else:
            namespace[f"_default{index}"] = parameter.default
            arguments.append(f"{parameter.name}=_default{index}")
        body.append(f"    _set{index}(self, {parameter.name})")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # generated from the dataclass's own fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = original.__doc__
    type.__setattr__(cls, "__init__", init)
    return cls


slot_init(Signal)


SIGNAL_RECORD_FIELDS = ("signal_id", "timestamp", "symbol", "side", "consensus", "confidence",
                        "strength", "model_votes", "price", "atr", "ema_200", "volume_24h",
                        "spread_bps", "market_timestamp", "equity")
RECORD_FIELD_SET = frozenset(SIGNAL_RECORD_FIELDS)
TIMESTAMP_FORMS = "ISO 8601 such as 2026-11-24T12:00:00Z, or epoch seconds or milliseconds"


def record_problems(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What makes a signal record unreadable as meant: (kind, what to do) pairs, the kind the
    same for every line wrong in the same way."""
    problems = []
    for key in record:
        if key in RECORD_FIELD_SET:
            continue
        near = difflib.get_close_matches(str(key).strip().lower(), SIGNAL_RECORD_FIELDS, n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(SIGNAL_RECORD_FIELDS)}"
        problems.append((f"unknown field {key}", f"unknown field {key!r} ({hint})"))
    for name in ("timestamp", "market_timestamp"):
        value = record.get(name)
        if value not in (None, "") and parse_timestamp(value) is None:
            problems.append((f"unreadable {name}", f"{name} {value!r} is not a time rulekit "
                                                   f"reads: write {TIMESTAMP_FORMS}"))
    return problems


SETTLEMENT = re.compile(r":[A-Z0-9]+$")  # ccxt's swap suffix: BTC/USDT:USDT
SEPARATORS = re.compile(r"[/_\s-]+")
CONTRACT_WORDS = ("PERP", "SWAP")  # BTC-USDT-PERP (a perpetual) trades as BTCUSDT


def normalise_symbol(value: Any) -> str | None:
    """One spelling per market, in signals and candle file names alike: BTC/USDT, BTC/USDT:USDT
    (ccxt), BTC-USDT, btcusdt and BTC-USDT-PERP are all BTCUSDT. None for no symbol."""
    text = as_text(value)
    if text is None:
        return None
    text = SETTLEMENT.sub("", text.upper())
    parts = [part for part in SEPARATORS.split(text) if part]
    if len(parts) > 2:
        parts = [part for part in parts if part not in CONTRACT_WORDS] or parts
    return "".join(parts) or None


class RiskState(NamedTuple):
    """The account row: the account-wide figures the global limits read, as of a decision.

    The one shape of the account's state everywhere (the engine's inputs, the batch columns, the
    audit row, a state file, a policy test case), its fields in the vocabulary's order. Equities
    are in the account's quote currency; ``open_exposure`` is the summed notional of open trades;
    ``circuit_breaker_until`` is the end of a pause in epoch seconds (NaN: none);
    ``breaker_reference_equity`` is the highest equity since the breaker last tripped;
    ``open_symbols`` the symbol of every open trade (or entry on its way).
    """

    equity: float = NAN
    day_start_equity: float = NAN
    week_start_equity: float = NAN
    peak_equity: float = NAN
    breaker_reference_equity: float = NAN
    consecutive_losses: int = 0
    open_trades: int = 0
    open_exposure: float = 0.0
    circuit_breaker_until: float = NAN
    open_symbols: tuple[str, ...] = ()

    @classmethod
    def fresh(cls, equity: float) -> RiskState:
        """A new account: no trades, every reference equity equal to the current one."""
        return cls(equity, equity, equity, equity, equity)

    @classmethod
    def from_record(cls, record: Any, source: str | None = None) -> RiskState:
        """The one reader of a risk state written by a person (a state file, a policy test case).

        ``equity`` is required. Left out, the day's, the week's and the peak equity are ``equity``
        (a fresh day), the breaker's reference is the peak (the highest it can be, so the breaker
        trips no later than the truth), counts are 0, and ``open_exposure`` is 0 only when no
        trade is open. Anything else missing or malformed is a ``StateError``, never a default.
        """
        if not isinstance(record, Mapping):
            raise StateError("the risk state must be an object with at least `equity`", source)
        unknown = set(record) - set(cls._fields)
        if unknown:
            raise StateError(f"unknown risk state field(s): {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(cls._fields)})", source)
        if "equity" not in record:
            raise StateError("missing field: equity", source)

        def number(name: str, default: Any) -> float:
            value = record.get(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise StateError(f"{name} must be a finite number, not {value!r}", source)
            return float(value)

        def count(name: str) -> int:
            value = record.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StateError(f"{name} must be a whole number >= 0, not {value!r}", source)
            return value

        equity = number("equity", None)
        peak = number("peak_equity", equity)
        open_trades = count("open_trades")
        if open_trades and "open_exposure" not in record:
            raise StateError("open_exposure is required when open_trades > 0", source)
        until = record.get("circuit_breaker_until")
        until_s = NAN
        if until is not None:
            moment = parse_timestamp(until)
            if moment is None:
                raise StateError(f"circuit_breaker_until is not a timestamp: {until!r}", source)
            until_s = moment.timestamp()
        symbols = record.get("open_symbols", ())
        if not isinstance(symbols, (list, tuple)) or not all(isinstance(s, str) for s in symbols):
            raise StateError("open_symbols must be a list of symbols", source)
        return cls(equity, number("day_start_equity", equity), number("week_start_equity", equity),
                   peak, number("breaker_reference_equity", peak), count("consecutive_losses"),
                   open_trades, number("open_exposure", 0.0), until_s, tuple(symbols))

    def position_open(self, symbol: str | None) -> bool:
        """A trade on ``symbol`` is open (or its entry is on its way)."""
        return symbol in self.open_symbols

    def paused(self, at: float) -> bool:
        """A circuit-breaker pause is running at ``at`` (epoch seconds)."""
        return at < self.circuit_breaker_until

    def inputs(self, at: float, symbol: str | None) -> tuple:
        """The engine's account inputs (``ACCOUNT_INPUTS``, vocabulary order) for a signal on
        ``symbol`` decided at ``at``."""
        return (self.equity, self.day_start_equity, self.week_start_equity, self.peak_equity,
                self.breaker_reference_equity, float(self.consecutive_losses),
                float(self.open_trades), self.open_exposure, at < self.circuit_breaker_until,
                symbol in self.open_symbols)

    def as_record(self) -> dict[str, Any]:
        """JSON-ready: the pause's end as ISO 8601 or null, numbers that are not finite as null."""
        record = self._asdict()
        record["circuit_breaker_until"] = (None if self.circuit_breaker_until != self.circuit_breaker_until
                                           else format_timestamp(self.circuit_breaker_until))
        record["open_symbols"] = list(self.open_symbols)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in record.items()}


@dataclass(frozen=True, slots=True)
class MarketRules:
    """An exchange's order rules for one symbol: quantities are whole multiples of ``amount_step``."""

    amount_step: float
    min_notional: float = 0.0
    min_amount: float = 0.0
    price_tick: float | None = None


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One line of a decision's trace: a check that passed or failed, or a figure and its value."""

    rule: str
    section: str
    passed: bool | None = None
    value: float | bool | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "section": self.section}
        if self.passed is None:
            out["value"] = self.value
        else:
            out["passed"] = self.passed
        return out


DECISION_FIELDS = ("approved", "reason", "quantity", "notional", "leverage", "risk_amount",
                   "risk_at_stop", "stop_loss", "take_profit", "breakeven_trigger",
                   "partial_tp_price", "reward_risk", "policy_name", "policy_version", "policy_hash")
LEVEL_FIELDS = DECISION_FIELDS[2:12]


@dataclass(frozen=True, slots=True)
class TraceLayout:
    """Which rule or figure each position of a decision's outcome tuple is; shared by all decisions."""

    checks: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str], ...]
    positions: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, checks: tuple[tuple[str, str], ...], values: tuple[tuple[str, str], ...]):
        offset = len(checks)
        return cls(checks, values, {name: offset + i for i, (name, _) in enumerate(values)})


class Decision(tuple):
    """Approved with a size and exit levels, or rejected with the id of the first rule that failed.

    A tuple underneath (built in one step, no per-field ``__setattr__``), immutable like the
    frozen value it replaces, equal by verdict and policy as before. The trace is the compiled
    program's raw outcome tuple, expanded only when read; a rejection decided by the program that
    stops at its first failed check keeps its inputs instead and runs the full program for its
    trace the first time ``outcomes`` (``trace``, ``value``, the audit's ``checks_passed``) is read.
    """

    __slots__ = ()

    def __new__(cls, approved: bool, reason: str | None, policy_name: str, policy_version: int,
                policy_hash: str, layout: TraceLayout, outcomes: tuple,
                elapsed_us: float = NAN) -> Decision:
        return tuple.__new__(cls, (approved, reason, policy_name, policy_version, policy_hash,
                                   layout, outcomes, elapsed_us))

    @classmethod
    def deferred(cls, head: tuple, rerun: Callable[[tuple], tuple], inputs: tuple,
                 elapsed_us: float) -> Decision:
        """A decision whose outcomes are ``rerun(inputs)``, computed once, when first read;
        ``head`` is (approved, reason, policy_name, policy_version, policy_hash, layout)."""
        return tuple.__new__(cls, head + ([None, rerun, inputs], elapsed_us))

    @property
    def approved(self) -> bool:
        return tuple.__getitem__(self, 0)

    @property
    def reason(self) -> str | None:
        return tuple.__getitem__(self, 1)

    @property
    def policy_name(self) -> str:
        return tuple.__getitem__(self, 2)

    @property
    def policy_version(self) -> int:
        return tuple.__getitem__(self, 3)

    @property
    def policy_hash(self) -> str:
        return tuple.__getitem__(self, 4)

    @property
    def layout(self) -> TraceLayout:
        return tuple.__getitem__(self, 5)

    @property
    def elapsed_us(self) -> float:
        """The engine's own time for this decision, in microseconds."""
        return tuple.__getitem__(self, 7)

    @property
    def outcomes(self) -> tuple:
        """Every check's outcome (in ``layout.checks`` order), then every figure's value."""
        held = tuple.__getitem__(self, 6)
        if held.__class__ is tuple:
            return held
        if held[0] is None:  # [outcomes, rerun, inputs]: the full program, once
            held[0] = held[1](held[2])
        return held[0]

    def __getattr__(self, name: str) -> Any:
        if name in LEVEL_FIELDS:
            return self.value(name) if tuple.__getitem__(self, 0) else None
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _key(self) -> tuple:
        return tuple.__getitem__(self, slice(0, 5))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Decision:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"Decision(approved={self.approved!r}, reason={self.reason!r}, policy_name="
                f"{self.policy_name!r}, policy_version={self.policy_version!r}, policy_hash="
                f"{self.policy_hash!r})")

    def __reduce__(self) -> tuple:
        return (Decision, (*self._key(), self.layout, self.outcomes, self.elapsed_us))

    def value(self, name: str) -> Any:
        """A figure the program computed (also for a rejected decision, for the trace and audit)."""
        return self.outcomes[self.layout.positions[name]]

    @property
    def trace(self) -> tuple[RuleOutcome, ...]:
        checks = len(self.layout.checks)
        outcomes = self.outcomes
        lines = [RuleOutcome(rule, section, passed=bool(passed))
                 for (rule, section), passed in zip(self.layout.checks, outcomes[:checks], strict=False)]
        lines += [RuleOutcome(rule, section, value=json_value(value))
                  for (rule, section), value in zip(self.layout.values, outcomes[checks:], strict=False)]
        return tuple(lines)

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in DECISION_FIELDS}
        for name in LEVEL_FIELDS:
            out[name] = json_value(out[name])
        out["trace"] = [outcome.as_dict() for outcome in self.trace]
        return out


def json_value(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN and infinities to None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    number = float(value)
    return number if math.isfinite(number) else None

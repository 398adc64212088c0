"""The values that flow through a decision: signal, market conditions, account, market rules, decision.

Fields of a signal may be missing or malformed on purpose: parsing never raises, it records NaN or
None, and the engine's input checks turn that into a named rejection (fail closed).
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
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
        otherwise be decided as "now", or its market data as fresh)."""
        get = record.get
        side = as_text(get("side"))
        consensus = as_text(get("consensus"))
        signal_id = get("signal_id")
        return cls(
            symbol=normalise_symbol(get("symbol")),
            side=side.upper() if side else None,
            consensus=consensus.upper() if consensus else None,
            confidence=as_number(get("confidence")),
            price=as_number(get("price")),
            atr=as_number(get("atr")),
            ema_200=as_number(get("ema_200")),
            volume_24h=as_number(get("volume_24h")),
            spread_bps=as_number(get("spread_bps")),
            signal_id=None if signal_id in (None, "") else str(signal_id),
            timestamp=parse_timestamp(get("timestamp")),
            market_timestamp=parse_timestamp(get("market_timestamp")),
            strength=as_number(get("strength")),
            model_votes=get("model_votes"),
            equity=as_number(get("equity")),
            well_formed=not record_problems(record),
            raw=record,
        )


SIGNAL_RECORD_FIELDS = ("signal_id", "timestamp", "symbol", "side", "consensus", "confidence",
                        "strength", "model_votes", "price", "atr", "ema_200", "volume_24h",
                        "spread_bps", "market_timestamp", "equity")
TIMESTAMP_FORMS = "ISO 8601 such as 2026-11-24T12:00:00Z, or epoch seconds or milliseconds"


def record_problems(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What makes a signal record unreadable as meant: (kind, what to do) pairs, the kind the
    same for every line wrong in the same way."""
    problems = []
    for key in record:
        if key in SIGNAL_RECORD_FIELDS:
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


@dataclass(frozen=True, slots=True)
class Decision:
    """Approved with a size and exit levels, or rejected with the id of the first rule that failed.

    The trace is kept as the compiled program's raw outcome tuple and expanded only when read, so a
    decision costs no more than the rules themselves.
    """

    approved: bool
    reason: str | None
    policy_name: str
    policy_version: int
    policy_hash: str
    layout: TraceLayout = field(repr=False, compare=False)
    outcomes: tuple = field(repr=False, compare=False)
    elapsed_us: float = field(default=NAN, repr=False, compare=False)  # the engine's own time

    def __getattr__(self, name: str) -> Any:
        if name in LEVEL_FIELDS:
            return self.value(name) if self.approved else None
        raise AttributeError(name)

    def value(self, name: str) -> Any:
        """A figure the program computed (also for a rejected decision, for the trace and audit)."""
        return self.outcomes[self.layout.positions[name]]

    @property
    def trace(self) -> tuple[RuleOutcome, ...]:
        checks = len(self.layout.checks)
        lines = [RuleOutcome(rule, section, passed=bool(passed))
                 for (rule, section), passed in zip(self.layout.checks, self.outcomes[:checks], strict=False)]
        lines += [RuleOutcome(rule, section, value=json_value(value))
                  for (rule, section), value in zip(self.layout.values, self.outcomes[checks:], strict=False)]
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

"""The names a policy can read, and the checks and figures the engine always adds around it.

A risk manager edits the policy's gates, limits and formulas; the input checks and the final sizing
arithmetic below are not editable, so no policy can approve a trade on a NaN price or round a
quantity up.
"""
from __future__ import annotations

from rulekit.model import Consensus, Side
from rulekit.policy.expressions import Type

N, B, T = Type.NUMBER, Type.BOOL, Type.TEXT

# Raw inputs, in the order the compiled decision function takes them.
INPUTS: dict[str, tuple[Type, str]] = {
    "well_formed": (B, "the signal could be read as a record at all"),
    "symbol": (T, "instrument, as in the policy's markets"),
    "side": (T, "LONG or SHORT"),
    "consensus": (T, "UNANIMOUS, STRONG, WEAK or SPLIT"),
    "confidence": (N, "ensemble confidence, 0..1"),
    "strength": (N, "signal strength as the bot reports it (NaN when absent)"),
    "price": (N, "last price, quote currency"),
    "atr": (N, "average true range, quote currency"),
    "ema_200": (N, "200-period exponential moving average"),
    "volume_24h": (N, "24h volume, quote currency"),
    "spread_bps": (N, "bid/ask spread, basis points"),
    "market_data_age_seconds": (N, "age of the market fields when the decision is made"),
    "history_bars": (N, "bars behind the market fields when rulekit computed them (NaN when the "
                        "signal carried its own)"),
    "equity": (N, "account equity, quote currency"),
    "day_start_equity": (N, "equity at the start of the UTC day"),
    "week_start_equity": (N, "equity at the start of the UTC week (Monday 00:00)"),
    "peak_equity": (N, "highest equity seen (high-water mark)"),
    "breaker_reference_equity": (N, "highest equity since the circuit breaker last tripped"),
    "consecutive_losses": (N, "losing trades in a row"),
    "open_trades": (N, "trades open now"),
    "open_exposure": (N, "summed notional of open trades, quote currency"),
    "circuit_breaker_active": (B, "a circuit-breaker pause is running"),
    "symbol_trade_open": (B, "a trade on the same symbol is open (or its entry on its way)"),
    "amount_step_units": (N, "the market's amount step as an integer number of 1/amount_step_scale"),
    "amount_step_scale": (N, "power of ten: amount_step = amount_step_units / amount_step_scale"),
    "min_notional": (N, "the market's smallest order value, quote currency"),
    "min_amount": (N, "the market's smallest order quantity"),
}

# Inputs that take one of a few words. A text compared with one of them in a rule, or a param
# compared with one (``consensus in min_consensus_types``), must hold those words, checked at load:
# a misspelt word would silently never match. ``symbol`` takes the policy's markets.
ENUMERATED: dict[str, tuple[str, ...]] = {
    "side": tuple(kind.value for kind in Side),
    "consensus": tuple(kind.value for kind in Consensus),
}

CONSTANTS: dict[str, object] = {
    "infinity": float("inf"),
    "consensus_types": tuple(kind.value for kind in Consensus),
}

# Figures every policy can read, defined once here so drawdown means the same in every policy.
DERIVED: dict[str, str] = {
    "is_long": "side == 'LONG'",
    "is_short": "side == 'SHORT'",
    "direction": "1.0 if is_long else -1.0",
    "entry": "price",
    "daily_drawdown_pct": "max(0, (day_start_equity - equity) / day_start_equity * 100)",
    "weekly_drawdown_pct": "max(0, (week_start_equity - equity) / week_start_equity * 100)",
    "drawdown_pct": "max(0, (peak_equity - equity) / peak_equity * 100)",
    "breaker_drawdown_pct": (
        "max(0, (breaker_reference_equity - equity) / breaker_reference_equity * 100)"),
    "exposure_pct": "open_exposure / equity * 100",
}

# Fail-closed input checks, run before the policy's gates. The id is the rejection reason.
INPUT_CHECKS: dict[str, str] = {
    "malformed_signal": "well_formed",
    "unknown_symbol": "symbol in known_symbols",
    "invalid_side": "is_long or is_short",
    "invalid_consensus": "consensus in consensus_types",
    "invalid_confidence": "0 <= confidence <= 1",
    # Only for fields rulekit computed from candles (history_bars is NaN otherwise): enough bars
    # for the ATR and the EMA, and a full 24h window behind the volume (``input_checks`` narrows
    # it, and the market-field checks, to what a policy reads).
    "insufficient_history": ("not (history_bars < max(ema_period, atr_period + 1))"
                             " and not (history_bars == history_bars and volume_24h != volume_24h)"),
    "invalid_price": "0 < price < infinity",
    "invalid_atr": "0 < atr < infinity",
    "invalid_ema_200": "0 < ema_200 < infinity",
    "invalid_volume_24h": "0 <= volume_24h < infinity",
    "invalid_spread_bps": "0 <= spread_bps < infinity",
    "invalid_equity": "0 < equity < infinity",
    "invalid_risk_state": (
        "0 < day_start_equity < infinity and 0 < week_start_equity < infinity"
        " and 0 < peak_equity < infinity and 0 < breaker_reference_equity < infinity"
        " and 0 <= consecutive_losses < infinity"
        " and 0 <= open_trades < infinity and 0 <= open_exposure < infinity"),
    "stale_market_data": "market_data_age_seconds <= max_market_data_age_seconds",
}

# The market fields an input check guards: a policy that never reads one is not refused for it.
MARKET_INPUTS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")


def input_checks(read: frozenset[str] | set[str]) -> dict[str, str]:
    """``INPUT_CHECKS`` for a policy whose rules and formulas read the inputs ``read``: a market
    field it never reads is not required (its check always passes, so the trace still shows it),
    and ``insufficient_history`` asks only for the bars the indicators it reads need (the EMA's,
    the ATR's) and for a full 24h window only when it reads the 24h volume."""
    checks = dict(INPUT_CHECKS)
    for name in MARKET_INPUTS:
        if name not in read:
            checks[f"invalid_{name}"] = "True"
    needs = [term for name, term in (("ema_200", "ema_period"), ("atr", "atr_period + 1"))
             if name in read] or ["1"]
    bars = needs[0] if len(needs) == 1 else f"max({', '.join(needs)})"
    history = f"not (history_bars < {bars})"
    if "volume_24h" in read:
        history += " and not (history_bars == history_bars and volume_24h != volume_24h)"
    checks["insufficient_history"] = history
    return checks

# Params read by code outside the expressions (the engine's params: required, or defaulted, and
# the values they may take) are declared in one place, the schema: rulekit/policy/schema.json.

# The size, after the policy's sizing: the smaller of the risk-based and the capped quantity,
# rounded DOWN to the market's step (toward less risk).
OUTPUTS: dict[str, str] = {
    "raw_quantity": "min(risk_amount / stop_distance, max_notional / price)",
    "quantity": "floor_to_step(raw_quantity, amount_step_units, amount_step_scale)",
    "notional": "quantity * price",
    "leverage": "notional / equity",
    "risk_at_stop": "quantity * stop_distance",
    "reward_risk": "abs(take_profit - entry) / abs(entry - stop_loss)",
    "partial_fraction": "partial_tp_fraction",
    "time_exit_seconds": "time_exit_hours * 3600",
    "fee_rate": "fee_pct / 100",
}

# What bound a decision's size: the figure ``size_capped_by`` holds the index into this tuple (the
# compiler builds it from the policy's own max_notional formula: ``compiler.size_cap_step``).
# none = the risk-based quantity (risk_amount / stop_distance), the full risk budget at the stop;
# max_notional = a per-position cap of max_notional (leverage, position notional) made it smaller;
# exposure_headroom = the account's room under its exposure cap (a max_notional term reading
# open_exposure) made it smaller.
SIZE_CAPS = ("none", "max_notional", "exposure_headroom")


def size_cap_name(code: float) -> str | None:
    """The name of a ``size_capped_by`` value (None for NaN: a decision never sized)."""
    return SIZE_CAPS[int(code)] if code == code else None


OUTPUT_CHECKS: dict[str, str] = {
    # One trade per symbol: exchanges net positions per symbol, so a second trade would share the
    # first one's position, and either trade's stop or target could close the other's.
    "symbol_position_open": "not symbol_trade_open",
    "invalid_size": ("0 < risk_amount < infinity and 0 < stop_distance < infinity"
                     " and max_notional < infinity and raw_quantity == raw_quantity"),
    "below_min_amount": "quantity > 0 and quantity >= min_amount",
    "below_min_notional": "notional >= min_notional",
    "invalid_exit_levels": (
        "((0 < stop_loss < entry < take_profit) if is_long else (0 < take_profit < entry < stop_loss))"
        " and 0 < breakeven_trigger < infinity and 0 < partial_tp_price < infinity"
        " and 0 < breakeven_stop < infinity and 0 < trailing_distance < infinity"
        " and 0 < time_exit_progress_price < infinity"
        " and 0 <= partial_fraction <= 1 and time_exit_seconds >= 0 and 0 <= fee_rate < 1"),
}

REQUIRED_SIZING = ("risk_amount", "stop_distance", "max_notional")
REQUIRED_EXITS = ("stop_loss", "take_profit", "breakeven_trigger", "partial_tp_price",
                  "breakeven_stop", "trailing_distance", "time_exit_progress_price")

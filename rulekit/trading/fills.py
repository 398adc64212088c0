"""Where an order fills inside a bar: the one set of conventions the lifecycle, the paper exchange and
backtests share, so a simulated fill can never disagree with a lifecycle event.

- A stop fills at its price, or at the bar's open when the bar opens beyond it (a gap: the market
  never traded at the stop). Slippage, where a caller applies it, comes on top.
- A target (take profit, resting limit) fills at its price, never better, even on a gap in our
  favour: the conservative reading of a bar we cannot see inside.
- When one bar reaches both a trade's stop and its target, the stop is assumed to have come first.
"""
from __future__ import annotations

import math


def stop_fill(is_long: bool, stop: float, bar_open: float, bar_high: float,
              bar_low: float) -> float | None:
    """The fill price of a protective stop in this bar, or None if the bar did not reach it.

    A LONG's stop sells when the price falls to it; a SHORT's buys when the price rises to it.
    """
    if not math.isfinite(stop):
        return None
    if is_long:
        if bar_low <= stop:
            return min(bar_open, stop)
        return None
    if bar_high >= stop:
        return max(bar_open, stop)
    return None


def target_fill(is_long: bool, target: float, bar_high: float, bar_low: float) -> float | None:
    """The fill price of a take-profit (limit) in this bar, or None if the bar did not reach it."""
    if not math.isfinite(target):
        return None
    if is_long:
        return target if bar_high >= target else None
    return target if bar_low <= target else None


def adverse(price: float, is_buy: bool, slippage_bps: float) -> float:
    """``price`` moved against the order by ``slippage_bps``: a buy pays more, a sell gets less."""
    factor = slippage_bps / 10_000
    return price * (1 + factor) if is_buy else price * (1 - factor)
